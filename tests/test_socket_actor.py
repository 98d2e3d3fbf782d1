"""Socket actors on the shared Ray session: DMA timing from the profile, data integrity,
determinism, leasing, phantom capacity at trillion-parameter scale, health and status."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from importlib import resources

import numpy as np
import psutil
import pytest
import ray
import yaml

from sn40l.errors import OutOfDeviceMemory, SocketBusyError

# The oracle reads the shipped YAML itself, not our profile loader.
RAW = yaml.safe_load(resources.files("sn40l.hardware").joinpath("profiles/sn40l.yaml").read_text())
GB = 10**9


def _expected_ns(nbytes: int, bandwidth_gb_s: float, latency_ns: int) -> int:
    return latency_ns + math.ceil(nbytes / (bandwidth_gb_s * GB) * 1e9)


def test_copy_timing_is_bytes_over_bandwidth_plus_latency(cluster2x8):
    assert RAW["copy"]["ddr_to_hbm"]["bandwidth"]["value"] == "125GB/s"
    assert RAW["copy"]["ddr_to_hbm"]["latency"]["value"] == "2us"
    assert RAW["links"]["host"]["bandwidth"]["value"] == "32GB/s"
    sock = cluster2x8.socket(3)
    nbytes = 2 * 3_000_000  # bf16
    w = ray.get(sock.write.remote("tt/w", "ddr", {"shape": [3_000_000], "dtype": "bf16",
                                                  "data": None}))
    assert w["end_ns"] - w["start_ns"] == _expected_ns(nbytes, 32, 2000)
    c = ray.get(sock.copy.remote("tt/w", "hbm", "tt/w@hbm"))
    assert c["start_ns"] == w["end_ns"]
    assert c["end_ns"] - c["start_ns"] == _expected_ns(nbytes, 125, 2000)
    s = ray.get(sock.copy.remote("tt/w@hbm", "sram", "tt/w@sram"))
    assert s["end_ns"] - s["start_ns"] == _expected_ns(nbytes, 1800, 500)  # HBM-bound
    for name in ("tt/w", "tt/w@hbm", "tt/w@sram"):
        ray.get(sock.free.remote(name))


def test_materialized_round_trip_is_intact(cluster2x8):
    sock = cluster2x8.socket(9)
    data = np.random.default_rng(1).standard_normal((64, 33)).astype(np.float32)
    ray.get(sock.write.remote("rt", "ddr", data, dtype="fp32"))
    for tier in ("hbm", "sram", "hbm", "ddr"):
        ray.get(sock.copy.remote("rt", tier, move=True))
    back = ray.get(sock.read.remote("rt"))
    ray.get(sock.free.remote("rt"))
    np.testing.assert_array_equal(back["data"], data)


def _workload(cluster, ranks):
    out = []
    for r in ranks:
        h = cluster.socket(r)
        w = ray.get(h.write.remote("det/w", "ddr", {"shape": [1000 + r], "dtype": "bf16",
                                                     "data": None}))
        c = ray.get(h.copy.remote("det/w", "hbm", "det/w2", wait=False))
        d = ray.get(h.copy.remote("det/w2", "sram", "det/w3"))
        out.append((w["end_ns"], c["start_ns"], c["end_ns"], d["start_ns"], d["end_ns"]))
    return out


def test_modeled_times_are_deterministic(make_cluster):
    first = make_cluster(nodes=1)
    a = _workload(first, range(8))
    second = make_cluster(nodes=1)
    b = _workload(second, range(8))
    assert a == b
    # the asynchronous copy did not move the clock, the dependent copy queued behind it
    assert all(d_start == c_end for (_, _, c_end, d_start, _) in a)


def test_lease_refuses_other_jobs_and_bare_ids(make_cluster):
    cluster = make_cluster(nodes=1)
    sock = cluster.socket(0)
    token = "a" * 64
    cap = f"7:{token}"
    ray.get(sock.lease.remote(7, token))
    ray.get(sock.alloc.remote("j7", "hbm", [4], job=cap))
    # no job, another job, the holder's bare id, a forged token, garbage: all refused
    for job in (None, 8, 7, f"7:{'b' * 64}", f"8:{token}", "7:short", "x"):
        with pytest.raises(SocketBusyError) as err:
            ray.get(sock.alloc.remote("x", "hbm", [4], job=job))
        assert "allocated to job 7" in str(err.value), job
    with pytest.raises(SocketBusyError, match="allocated to job 7"):
        ray.get(sock.lease.remote(8, "c" * 64))
    for bad in (None, 7, f"7:{'b' * 64}"):  # release needs the capability too
        with pytest.raises(SocketBusyError, match="allocated to job 7"):
            ray.get(sock.release.remote(bad))
    assert ray.get(sock.leased_to.remote()) == 7
    ray.get(sock.release.remote(cap, free_owner="user"))
    assert ray.get(sock.regions.remote()) == []
    ray.get(sock.alloc.remote("x", "hbm", [4]))  # free again


def test_trillion_parameter_phantom_costs_little_host_memory(make_cluster):
    """Each of 16 sockets holds 1.4 TiB of phantom DDR; actor RSS stays far below 150 MB."""
    cluster = make_cluster(nodes=2)
    before = [p["rss"] for p in cluster.call("ping")]
    for i in range(14):
        cluster.call("alloc", f"expert{i}", "ddr", [50 * 2**30], "bf16", read_only=True,
                     phantom=True)
    stats = cluster.call("stats")
    assert all(s["tiers"]["ddr"]["used"] == 14 * 100 * 2**30 for s in stats)
    after = [p["rss"] for p in cluster.call("ping")]
    assert max(a - b for a, b in zip(after, before)) < 20 * 2**20
    assert max(after) < 150 * 2**20
    with pytest.raises(OutOfDeviceMemory) as err:
        ray.get(cluster.socket(0).alloc.remote("one-too-many", "ddr", [70 * 2**30],
                                               phantom=True))
    assert "DDR" in str(err.value) and "n0s0" in str(err.value)


def test_status_reports_each_socket_and_a_dead_one(make_cluster):
    cluster = make_cluster(nodes=1)
    ray.get(cluster.socket(2).alloc.remote("a", "hbm", [1024]))
    pid = ray.get(cluster.socket(5).ping.remote())["pid"]
    ray.kill(cluster.socket(5))  # asynchronous: the socket may still answer for a moment
    try:
        psutil.Process(pid).wait(timeout=20)
    except psutil.NoSuchProcess:
        pass  # already gone
    rows = cluster.status(timeout_s=20)
    assert [r["state"] for r in rows] == ["up"] * 5 + ["down"] + ["up"] * 2
    assert rows[2]["tiers"]["hbm"]["used"] == 2048
    assert rows[0]["node"] == "sn00" and rows[7]["socket"] == 7


DRIVE = """
import sys
from sn40l.cluster import Cluster, ensure_ray
from sn40l.errors import ClusterError
ensure_ray(None)
try:
    Cluster.start(nodes=1, name="provenance")
except ClusterError as exc:
    print(exc)
    sys.exit(3)
print("started")
"""


def test_sockets_that_run_other_sn40l_code_are_refused(tmp_path, cluster2x8):
    """A driver started inside a directory holding another sn40l: Ray's workers import that
    one, the driver its own. The start is refused, naming both, instead of running on."""
    from sn40l.provenance import PACKAGE_DIR, code_digest

    assert {p["code"] for p in cluster2x8.wait_healthy()} == {code_digest()}
    other = tmp_path / "sn40l"
    shutil.copytree(PACKAGE_DIR, other, ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "provenance.py", "a") as fh:
        fh.write("# another version\n")
    script = tmp_path / "bin" / "drive.py"
    script.parent.mkdir()
    script.write_text(DRIVE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "run other sn40l code than this process" in res.stdout
    # the copy by its directory; this sn40l by its digest (the driver may import it from
    # site-packages while this test process imports the checkout: same code, same digest)
    assert str(other) in res.stdout and f"(code {code_digest()})" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
