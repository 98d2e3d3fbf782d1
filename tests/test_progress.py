"""Progress goes to stderr only: lines when not a terminal, nothing when quiet or off."""

from __future__ import annotations

import io

import pytest

from sn40l.errors import ConfigError
from sn40l.progress import ProgressMode, progress, progress_mode


def test_lines_mode_writes_one_line_per_step(monkeypatch):
    monkeypatch.setenv("SN40L_PROGRESS", "lines")
    out = io.StringIO()
    with progress(3, "sweep", stream=out) as bar:
        bar.note("tp=1")
        bar.update()
        bar.update(2, note="tp=8")
    lines = out.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["sweep: 1/3 tp=1", "sweep: 3/3 tp=8"]


def test_quiet_and_off_write_nothing(monkeypatch):
    out = io.StringIO()
    with progress(2, "x", quiet=True, stream=out) as bar:
        bar.update()
    monkeypatch.setenv("SN40L_PROGRESS", "off")
    with progress(2, "x", stream=out) as bar:
        bar.update()
    assert out.getvalue() == ""


def test_auto_is_lines_off_a_terminal(monkeypatch):
    monkeypatch.delenv("SN40L_PROGRESS", raising=False)
    assert progress_mode(stream=io.StringIO()) is ProgressMode.LINES


def test_bar_mode_draws_on_the_stream(monkeypatch):
    monkeypatch.setenv("SN40L_PROGRESS", "bar")
    out = io.StringIO()
    with progress(4, "load", stream=out) as bar:
        bar.update(4)
    assert "load" in out.getvalue()


def test_unknown_mode_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("SN40L_PROGRESS", "fancy")
    with pytest.raises(ConfigError, match="SN40L_PROGRESS='fancy'.*allowed: auto, bar, lines, off"):
        progress_mode()
