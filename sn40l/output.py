"""Machine-readable stdout: with ``--json`` a command's stdout holds exactly one JSON document.

:func:`reserve_stdout` (called by ``sn40l.cli.main`` before any command module is imported,
so before Ray starts) keeps a private copy of the stdout descriptor and points descriptor 1
at stderr: whatever else writes to stdout afterwards (Ray's log monitor thread with its
"(raylet) ... worker processes have been started" lines, Ray's subprocesses, our notices)
lands on stderr. :func:`emit_json` writes the document to the reserved descriptor.
A leaf module: it imports nothing from the package.
"""

from __future__ import annotations

import json
import os
import sys

_reserved: int | None = None


def reserve_stdout() -> None:
    """Keep stdout for the JSON document only (see the module docstring); idempotent."""
    global _reserved
    if _reserved is not None:
        return
    sys.stdout.flush()
    _reserved = os.dup(1)
    os.dup2(2, 1)


def emit_json(doc, indent: int | None = 2) -> None:
    """Write ``doc`` as one JSON document to stdout (the reserved one when there is one)."""
    text = json.dumps(doc, indent=indent) + "\n"
    if _reserved is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    data = text.encode()
    while data:
        data = data[os.write(_reserved, data):]
