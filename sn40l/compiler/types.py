"""Closed choices of the compiler."""

from __future__ import annotations

from sn40l.choices import Choice


class Mode(Choice):
    """What a compiled graph does: one decode step per sequence, or a prefill of the prompt."""

    DECODE = "decode"
    PREFILL = "prefill"


class FusionLevel(Choice):
    """``fused``: a whole decoder layer per kernel, intermediates in SRAM; ``unfused``: one
    kernel per operator, intermediates materialized in HBM."""

    FUSED = "fused"
    UNFUSED = "unfused"


class Orchestration(Choice):
    """``software``: the host launches every kernel; ``hardware``: a static on-device schedule."""

    HARDWARE = "hardware"
    SOFTWARE = "software"
