"""Slurm host lists: ``sn[00-03,07]`` <-> ``[sn00, sn01, sn02, sn03, sn07]``."""

from __future__ import annotations

import re

_BRACKET = re.compile(r"^([^\[\],]*)\[([^\]]+)\](.*)$")


def expand(text: str) -> list[str]:
    """Every host name of a host list (``a,b``, ``sn[00-03,07]``, ``sn0[1-2]``), in order.

    Raises ValueError on a malformed list (unbalanced brackets, a range that runs backwards).
    """
    hosts: list[str] = []
    for part in _split_top(text.strip()):
        if not part:
            continue
        m = _BRACKET.match(part)
        if not m:
            if "[" in part or "]" in part:
                raise ValueError(f"malformed host list {text!r}")
            hosts.append(part)
            continue
        prefix, body, suffix = m.groups()
        if "[" in suffix:
            raise ValueError(f"malformed host list {text!r}: one bracket group per name")
        for item in body.split(","):
            if "-" in item:
                lo, hi = item.split("-", 1)
                if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
                    raise ValueError(f"malformed range {item!r} in host list {text!r}")
                width = len(lo)
                hosts += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1)]
            elif item.isdigit():
                hosts.append(f"{prefix}{item}{suffix}")
            else:
                raise ValueError(f"malformed item {item!r} in host list {text!r}")
    return hosts


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"malformed host list {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ValueError(f"malformed host list {text!r}")
    parts.append("".join(cur))
    return parts


def compress(hosts: list[str]) -> str:
    """The shortest Slurm form of ``hosts``: names sharing a prefix and digit width fold into
    ranges (``sn[00-02,05]``); a single host stays as it is; the empty list is ``""``."""
    groups: dict[tuple[str, int], list[int]] = {}
    order: list[tuple[str, int] | str] = []
    for h in hosts:
        m = re.match(r"^(.*?)(\d+)$", h)
        if not m:
            order.append(h)
            continue
        key = (m.group(1), len(m.group(2)))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(int(m.group(2)))
    out = []
    for key in order:
        if isinstance(key, str):
            out.append(key)
            continue
        prefix, width = key
        nums = sorted(set(groups[key]))
        if len(nums) == 1:
            out.append(f"{prefix}{nums[0]:0{width}d}")
            continue
        ranges, start, prev = [], nums[0], nums[0]
        for n in nums[1:] + [None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            ranges.append(f"{start:0{width}d}" if start == prev
                          else f"{start:0{width}d}-{prev:0{width}d}")
            if n is not None:
                start = prev = n
        out.append(f"{prefix}[{','.join(ranges)}]")
    return ",".join(out)


def ranges(ids: list[int]) -> str:
    """``0-2,5`` for [0, 1, 2, 5] (ids sorted): the body of an array's ``A_[0-2,5]`` and of
    srun's ``tasks 0-2,5``."""
    parts, lo = [], ids[0]
    for prev, cur in zip(ids, ids[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            parts.append(str(lo) if lo == prev else f"{lo}-{prev}")
            lo = cur
    return ",".join(parts)
