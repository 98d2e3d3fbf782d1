"""Progress of long work (bring-up, compile, load, generation, sweeps, benchmarks) on stderr.

One helper for every command, so progress looks the same everywhere and never touches stdout
(which may hold a JSON document):

* stderr is a terminal: a tqdm bar with the current item, rate and ETA;
* stderr is not a terminal (a log file, CI): one line per step, ``desc: i/total note (elapsed)``;
* ``quiet=True`` (the commands' ``--quiet``) or ``SN40L_PROGRESS=off``: nothing.

``SN40L_PROGRESS`` may also force ``bar`` or ``lines``. Use it as a context manager::

    with progress(len(points), "sweep", quiet=args.quiet) as bar:
        for p in points:
            bar.note(p.label)      # what is running now
            run(p)
            bar.update()           # one step done
"""

from __future__ import annotations

import enum
import os
import sys
import time
from typing import TextIO

from sn40l.errors import ConfigError


class ProgressMode(enum.Enum):
    """How progress is shown."""

    BAR = "bar"
    LINES = "lines"
    OFF = "off"


def progress_mode(quiet: bool = False, stream: TextIO | None = None) -> ProgressMode:
    """The mode for ``stream`` (stderr): ``SN40L_PROGRESS`` if set, else bar on a terminal."""
    if quiet:
        return ProgressMode.OFF
    raw = os.environ.get("SN40L_PROGRESS", "auto").strip().lower()
    if raw == "auto":
        stream = sys.stderr if stream is None else stream
        return ProgressMode.BAR if stream.isatty() else ProgressMode.LINES
    try:
        return ProgressMode(raw)
    except ValueError:
        allowed = ", ".join(["auto"] + [m.value for m in ProgressMode])
        raise ConfigError(f"SN40L_PROGRESS={raw!r} is not a progress mode; allowed: {allowed}") \
            from None


class Progress:
    """A running progress display; see the module docstring. ``__init__`` only stores."""

    def __init__(self, total: int | None, desc: str, mode: ProgressMode,
                 stream: TextIO | None = None, unit: str = "step"):
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0, got {total}")
        self.total, self.desc, self.mode, self.unit = total, desc, mode, unit
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self._note = ""
        self._bar = None
        self._t0 = 0.0

    def __enter__(self) -> "Progress":
        self._t0 = time.monotonic()
        if self.mode is ProgressMode.BAR:
            from tqdm import tqdm  # only when a bar is drawn
            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream,
                             dynamic_ncols=True, leave=False)
        return self

    def note(self, text: str) -> None:
        """Name what is being worked on now (shown beside the bar, or on the next line)."""
        self._note = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more steps are done."""
        if note is not None:
            self.note(note)
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode is ProgressMode.LINES:
            of = f"/{self.total}" if self.total is not None else ""
            extra = f" {self._note}" if self._note else ""
            elapsed = time.monotonic() - self._t0
            print(f"{self.desc}: {self.done}{of}{extra} ({elapsed:.1f} s)", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, *, quiet: bool = False, unit: str = "step",
             stream: TextIO | None = None) -> Progress:
    """A :class:`Progress` for ``total`` steps (None: unknown) on stderr."""
    return Progress(total, desc, progress_mode(quiet, stream), stream, unit)
