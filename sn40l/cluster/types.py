"""Closed choices of running models on a cluster (a leaf module: no Ray, no numpy)."""

from __future__ import annotations

from sn40l.choices import Choice


class DraftPlacement(Choice):
    """Where the draft model runs: on the target's sockets, or on sockets of its own."""

    SAME = "same"
    OTHER = "other"
