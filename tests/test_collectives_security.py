"""Collectives accept only their group: a real second OS user who can reach every endpoint
(abstract Unix addresses are open to all local users; TCP ports to anyone) sends forged
aborts, pre-sent forged replies with absurd clocks, malformed datagrams and unauthenticated
TCP connections. None of it changes a result or a clock, nothing raises, and every piece is
dropped and counted in ``p2p_stats``."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import ray

from sn40l.collectives import create_group, destroy_group
from sn40l.collectives.wire import KIND_ABORT, encode

_names = itertools.count()

# The attacker: plain Python as the second user, sending the bytes it is given.
ATTACK = r"""
import json, socket, sys
plan = json.load(sys.stdin)
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for addr, hexdata in plan["datagrams"]:
    dg.sendto(bytes.fromhex(hexdata), bytes.fromhex(addr))
for host, port, hexdata in plan["tcp"]:
    c = socket.create_connection((host, port), timeout=5)
    c.recv(16)                      # the challenge it cannot answer
    c.sendall(bytes.fromhex(hexdata))
    c.shutdown(socket.SHUT_WR)
    try:
        c.recv(1)                   # the endpoint hangs up
    except OSError:
        pass
    c.close()
print("sent")
"""


def _as_user(user, plan: dict) -> None:
    """Run the attacker as ``user`` with the system Python (the venv's may be unreadable)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    res = subprocess.run([python, "-I", "-c", ATTACK], input=json.dumps(plan), cwd="/",
                         user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "sent" in res.stdout, res.stderr


def _dropped(cluster, ranks) -> list[dict]:
    return [s["dropped"] for s in cluster.call("p2p_stats", ranks=ranks)]


def test_forged_abort_data_clocks_and_malformed_are_dropped(cluster2x8, second_user):
    ranks = list(range(8))
    infos = cluster2x8.call("p2p_info", ranks=ranks)
    name = f"sec{next(_names)}"
    create_group(cluster2x8, ranks, name)
    net = f"secnet{next(_names)}"
    create_group(cluster2x8, ranks, net, transport="net")
    before = _dropped(cluster2x8, ranks)
    wrong = os.urandom(32)  # the attacker knows the format, not the group's secret
    g = name.encode()
    forged = np.full(1, 1337, np.float32)
    datagrams = []
    for i, info in enumerate(infos):
        addr = info["address"].hex()
        # pre-sent replies of the star (member 0 -> i, tag 1) for the next ops, and members'
        # contributions to the root, all with a clock of 1e15 ns
        for seq in range(3):
            for tag, src in ((1, 0), (0, 1)):
                datagrams.append((addr, b"".join(encode(
                    wrong, g, seq, tag, src, 10**15, count=1, dt=b"<f4",
                    payload=forged.data)).hex()))
        datagrams.append((addr, b"".join(encode(wrong, g, 0, 0, 1, 0, payload=b"forged abort",
                                                kind=KIND_ABORT)).hex()))
        datagrams.append((addr, "00"))  # one byte
        datagrams.append((addr, "ff" * 200))  # garbage of header size
    tcp = [(info["net"][0], info["net"][1], b"".join(encode(
        wrong, net.encode(), 0, 0, 1, 0, payload=b"x" * 16, kind=2)).hex()) for info in infos]
    tcp.append((infos[0]["net"][0], infos[0]["net"][1], "00" * 5))  # not even a header
    t0 = max(cluster2x8.call("now", ranks=ranks))
    try:
        _as_user(second_user, {"datagrams": datagrams, "tcp": tcp})
        for group in (name, net):
            out = ray.get([cluster2x8.socket(r).allreduce.remote(group, np.ones(1, np.float32))
                           for r in ranks], timeout=60)
            for o in out:
                assert o["result"]["data"].tolist() == [8.0]
                assert o["end_ns"] < t0 + 10**9  # no forged clock got in
        after = _dropped(cluster2x8, ranks)
    finally:
        destroy_group(cluster2x8, ranks, name)
        destroy_group(cluster2x8, ranks, net)
    for i, (b, a) in enumerate(zip(before, after)):
        # 6 forged data datagrams, 1 forged abort, 1 TCP hello under the wrong key
        assert a["bad_mac"] - b["bad_mac"] == 8
        assert a["malformed"] - b["malformed"] == 2
        assert a["bad_hello"] - b["bad_hello"] == (1 if i == 0 else 0)
