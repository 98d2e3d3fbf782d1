"""Collectives between real socket actors: results against numpy, bit-identical ranks, modeled
time against the alpha-beta model from the profile's YAML, phantom = materialized timing,
determinism, the Ray transport, and a peer killed mid-AllReduce."""

from __future__ import annotations

import itertools
import os
import time
from importlib import resources

import numpy as np
import pytest
import ray
import yaml

from sn40l.collectives import create_group, destroy_group
from sn40l.collectives.shm import SHM_DIR
from sn40l.errors import CollectiveError, ConfigError

RAW = yaml.safe_load(resources.files("sn40l.hardware").joinpath("profiles/sn40l.yaml").read_text())
_names = itertools.count()


def _group(cluster, ranks, **kw) -> str:
    name = f"g{next(_names)}"
    create_group(cluster, ranks, name, **kw)
    return name


def _call(cluster, ranks, method, name, inputs, **kw):
    refs = [getattr(cluster.socket(r), method).remote(name, inputs[i], **kw)
            for i, r in enumerate(ranks)]
    return ray.get(refs, timeout=120)


@pytest.mark.parametrize("ranks", [[0, 1], [2, 5, 9], list(range(8)), list(range(16))],
                         ids=["n2", "n3-two-nodes", "n8", "n16-two-nodes"])
@pytest.mark.parametrize("length", [1, 7, 1001, 65537])
def test_allreduce_matches_numpy_and_is_bit_identical(cluster2x8, ranks, length):
    name = _group(cluster2x8, ranks)
    rng = np.random.default_rng(length)
    xs = [rng.standard_normal(length).astype(np.float32) for _ in ranks]
    algos = ["ring", "star", "tree", "oneshot"] if length in (7, 65537) else ["auto"]
    if len(ranks) == 16 and length > 1:
        algos.append("hierarchical")
    try:
        for algo in algos:
            out = _call(cluster2x8, ranks, "allreduce", name, xs, algo=algo)
            results = [o["result"]["data"] for o in out]
            exact = np.sum(np.array(xs, dtype=np.float64), axis=0)
            np.testing.assert_allclose(results[0], exact, rtol=1e-5, atol=1e-5 * len(ranks))
            assert all(np.array_equal(results[0], r) for r in results), algo
    finally:
        destroy_group(cluster2x8, ranks, name)


@pytest.mark.parametrize("op,ref", [("max", np.max), ("min", np.min)])
def test_max_and_min(cluster2x8, op, ref):
    ranks = [0, 3, 4]
    name = _group(cluster2x8, ranks)
    xs = [np.random.default_rng(i).integers(-50, 50, 13).astype(np.float32) for i in ranks]
    try:
        for algo in ("ring", "star"):
            out = _call(cluster2x8, ranks, "allreduce", name, xs, op=op, algo=algo)
            for o in out:
                np.testing.assert_array_equal(o["result"]["data"], ref(np.array(xs), axis=0))
    finally:
        destroy_group(cluster2x8, ranks, name)


def test_reduce_scatter_allgather_broadcast_barrier_send_recv(cluster2x8):
    ranks = [1, 2, 3]
    n = len(ranks)
    name = _group(cluster2x8, ranks)
    try:
        xs = [np.arange(10 * 4, dtype=np.float32).reshape(10, 4) * (i + 1) for i in range(n)]
        out = _call(cluster2x8, ranks, "reduce_scatter", name, xs)
        total = sum(xs)
        rows = [i * 10 // n for i in range(n + 1)]  # 10 rows over 3 members: 3, 3, 4
        for i, o in enumerate(out):
            np.testing.assert_array_equal(o["result"]["data"], total[rows[i]:rows[i + 1]])

        blocks = [np.full((2, 3), i, dtype=np.float32) for i in range(n)]
        for o in _call(cluster2x8, ranks, "allgather", name, blocks):
            np.testing.assert_array_equal(o["result"]["data"], np.concatenate(blocks))

        src = [np.arange(5, dtype=np.float32) * 7 if i == 1 else np.zeros(5, np.float32)
               for i in range(n)]
        for o in _call(cluster2x8, ranks, "broadcast", name, src, root=1):
            np.testing.assert_array_equal(o["result"]["data"], src[1])

        ray.get([cluster2x8.socket(r).barrier.remote(name) for r in ranks])

        big = np.random.default_rng(3).standard_normal(100_003).astype(np.float32)  # 7 chunks
        send = cluster2x8.socket(ranks[0]).p2p_send.remote(name, big, 2)
        got = ray.get(cluster2x8.socket(ranks[2]).p2p_recv.remote(name, 0))
        ray.get(send)
        np.testing.assert_array_equal(got["result"]["data"], big)
        assert got["end_ns"] > got["start_ns"]
    finally:
        destroy_group(cluster2x8, ranks, name)


def test_back_to_back_broadcasts_from_one_root_keep_their_data(cluster2x8):
    """The root of three broadcasts in a row must not overwrite the first one's buffer (the
    third op reuses it) before the readers, who start late here, have copied it."""
    ranks = [0, 1, 2]
    name = _group(cluster2x8, ranks)
    xs = [np.full(100_000, i + 1, np.float32) for i in range(3)]
    zero = np.zeros(100_000, np.float32)
    try:
        root = cluster2x8.socket(ranks[0])
        ray.get(root.broadcast.remote(name, xs[0]))
        ray.get(root.broadcast.remote(name, xs[1]))
        third = root.broadcast.remote(name, xs[2])  # waits for the readers of the first
        time.sleep(0.3)
        for i in range(3):
            got = ray.get([cluster2x8.socket(r).broadcast.remote(name, zero)
                           for r in ranks[1:]], timeout=60)
            for g in got:
                np.testing.assert_array_equal(g["result"]["data"], xs[i])
        ray.get(third, timeout=60)
    finally:
        destroy_group(cluster2x8, ranks, name)


def test_bad_use_is_refused(cluster2x8):
    name = _group(cluster2x8, [0, 1])
    try:
        with pytest.raises(ConfigError, match="already exists"):
            create_group(cluster2x8, [0, 1], name)
        with pytest.raises(ConfigError, match="unknown ReduceOp 'avg'; allowed: sum, max, min"):
            ray.get(cluster2x8.socket(0).allreduce.remote(name, np.ones(3, np.float32),
                                                          op="avg"))
        with pytest.raises(ConfigError, match="not in collective group 'nope'"):
            ray.get(cluster2x8.socket(0).barrier.remote("nope"))
        with pytest.raises(ConfigError, match="distinct socket ranks"):
            create_group(cluster2x8, [0, 0], "dup")
    finally:
        destroy_group(cluster2x8, [0, 1], name)


def _quiet_allreduce(cluster, ranks, name, tensors, algo):
    """Bring the members to one modeled time, run one AllReduce, return per-rank duration."""
    t0 = max(cluster.call("now", ranks=ranks)) + 10**6
    cluster.call("advance_to", t0, ranks=ranks)
    out = _call(cluster, ranks, "allreduce", name, tensors, algo=algo)
    assert all(o["start_ns"] == t0 for o in out)
    return [o["end_ns"] - t0 for o in out]


def test_ring_time_emerges_as_alpha_beta_and_phantom_matches(make_cluster):
    """On a quiet group the modeled ring time equals 2(n-1)(alpha + S/(nB)) within 1%."""
    assert RAW["links"]["p2p"]["bandwidth"]["value"] == "100GB/s"
    assert RAW["links"]["p2p"]["latency"]["value"] == "1us"
    alpha, bw = 1e-6, 100e9
    cluster = make_cluster(nodes=1)
    size = 8 * 2**20  # elements; BF16 on the device: S = 16 MiB
    for n in (3, 8):
        ranks = list(range(n))
        name = _group(cluster, ranks)
        expected_s = 2 * (n - 1) * (alpha + 2 * size / (n * bw))
        mat = {"shape": [size], "dtype": "bf16", "data": np.ones(size, np.float32)}
        phantom = {"shape": [size], "dtype": "bf16", "data": None}
        for inputs in ([mat] * n, [phantom] * n):
            for t in _quiet_allreduce(cluster, ranks, name, inputs, "ring"):
                assert abs(t * 1e-9 - expected_s) / expected_s < 0.01, (n, t, expected_s)
        destroy_group(cluster, ranks, name)


def test_modeled_times_are_deterministic_and_phantom_equals_materialized(make_cluster):
    runs = []
    for _ in range(2):
        cluster = make_cluster(nodes=1)
        ranks = list(range(8))
        name = _group(cluster, ranks)
        times = []
        for size in (5, 3000, 200_001):
            mat = [np.ones(size, np.float32)] * 8
            ph = [{"shape": [size], "dtype": "fp32", "data": None}] * 8
            for inputs in (mat, ph):
                times.append(_quiet_allreduce(cluster, ranks, name, inputs, "auto"))
            out = _call(cluster, ranks, "allreduce", name, mat)  # clocks as they come
            times.append([(o["start_ns"], o["end_ns"]) for o in out])
        runs.append(times)
        cluster.stop()
    assert runs[0] == runs[1]
    # each materialized run is followed by the phantom run of the same size: same durations
    for mat, ph in zip(runs[0][::3], runs[0][1::3]):
        assert mat == ph


def test_net_transport_matches_shm_bit_for_bit(cluster2x8):
    """TCP between the nodes (``net``: shared memory inside a node) and TCP between every two
    members (``tcp``) give the same bits as shared memory, for every algorithm, also when a
    piece that came over TCP is passed on over shared memory or as several datagrams."""
    ranks = [4, 5, 10, 13]  # two members on each node
    accepted = lambda: ray.get(cluster2x8.socket(4).p2p_stats.remote())["accepted_connections"]
    shm = _group(cluster2x8, ranks, transport="shm")
    xs = [np.random.default_rng(i).standard_normal(70_001).astype(np.float32) for i in ranks]
    blocks = [np.full((2, 3), i, dtype=np.float32) for i in range(len(ranks))]
    wide = [np.random.default_rng(i).standard_normal((50_000, 2)).astype(np.float32)
            for i in ranks]  # 400 KB blocks: more than a datagram holds
    big = np.random.default_rng(3).standard_normal(100_003).astype(np.float32)
    try:
        want = {algo: _call(cluster2x8, ranks, "allreduce", shm, xs, algo=algo)
                for algo in ("ring", "star", "tree", "oneshot", "hierarchical")}
        for kind, tcp_senders in (("net", 2), ("tcp", 3)):
            before = accepted()
            name = _group(cluster2x8, ranks, transport=kind)
            try:
                for algo, b in want.items():
                    a = _call(cluster2x8, ranks, "allreduce", name, xs, algo=algo)
                    for x, y in zip(a, b):
                        assert np.array_equal(x["result"]["data"], y["result"]["data"]), \
                            (kind, algo)
                        assert x["end_ns"] - x["start_ns"] >= 0
                for o in _call(cluster2x8, ranks, "allgather", name, blocks):
                    np.testing.assert_array_equal(o["result"]["data"], np.concatenate(blocks))
                for o in _call(cluster2x8, ranks, "allgather", name, wide):
                    np.testing.assert_array_equal(o["result"]["data"], np.concatenate(wide))
                send = cluster2x8.socket(ranks[0]).p2p_send.remote(name, big, 2)
                got = ray.get(cluster2x8.socket(ranks[2]).p2p_recv.remote(name, 0))
                ray.get(send)
                np.testing.assert_array_equal(got["result"]["data"], big)
            finally:
                destroy_group(cluster2x8, ranks, name)
            # rank 4 hears over TCP from the members of the other node only (net), or from
            # every other member (tcp)
            assert accepted() - before == tcp_senders, kind
    finally:
        destroy_group(cluster2x8, ranks, shm)
    with pytest.raises(ConfigError,
                       match="unknown TransportKind 'ray'; allowed: auto, shm, net, tcp"):
        create_group(cluster2x8, [0, 1], "bad-transport", transport="ray")


def test_net_transport_small_and_large(cluster2x8):
    ranks = [4, 10, 13]
    name = _group(cluster2x8, ranks, transport="net")
    xs = [np.random.default_rng(i).standard_normal(70_001).astype(np.float32) for i in ranks]
    try:
        for algo in ("ring", "star"):
            out = _call(cluster2x8, ranks, "allreduce", name, xs, algo=algo)
            exact = np.sum(np.array(xs, dtype=np.float64), axis=0)
            for o in out:
                np.testing.assert_allclose(o["result"]["data"], exact, rtol=1e-5, atol=1e-4)
            assert all(np.array_equal(out[0]["result"]["data"], o["result"]["data"]) for o in out)
    finally:
        destroy_group(cluster2x8, ranks, name)


def test_dead_peer_raises_everywhere_and_survivors_carry_on(make_cluster):
    cluster = make_cluster(nodes=1)
    ranks = list(range(8))
    name = _group(cluster, ranks, timeout_s=10.0)
    x = np.ones(300_000, np.float32)
    refs = [cluster.socket(r).allreduce.remote(name, x, algo="ring") for r in ranks[:7]]
    time.sleep(0.5)
    # the waiting sockets still answer while they are blocked inside a collective
    t0 = time.monotonic()
    assert ray.get(cluster.socket(0).ping.remote(), timeout=5)["rank"] == 0
    assert time.monotonic() - t0 < 2
    _kill_and_expect_named(cluster, 7, refs)
    survivors = ranks[:7]
    again = _group(cluster, survivors)
    out = _call(cluster, survivors, "allreduce", again, [x] * 7)
    np.testing.assert_array_equal(out[0]["result"]["data"], x * 7)
    # a small star waits on doorbells, not datagrams: a member that dies is named all the same,
    # by member 0 (which waits on its doorbell) and by the others (which wait on member 0's)
    small = np.ones(100, np.float32)
    refs = [cluster.socket(r).allreduce.remote(again, small, algo="star") for r in survivors[:6]]
    time.sleep(0.5)
    _kill_and_expect_named(cluster, 6, refs)


def _kill_and_expect_named(cluster, rank: int, refs) -> None:
    """Kill socket ``rank``; every call in ``refs`` must fail within 10 s, naming it and its
    pid."""
    dead_pid = ray.get(cluster.socket(rank).ping.remote())["pid"]
    ray.kill(cluster.socket(rank))
    t0 = time.monotonic()
    for ref in refs:
        with pytest.raises(CollectiveError) as err:
            ray.get(ref, timeout=30)
        assert f"rank {rank}" in str(err.value) and str(dead_pid) in str(err.value)
    assert time.monotonic() - t0 < 10


def test_doorbells_carry_the_same_messages_as_datagrams(cluster2x8):
    """On one host the star AllReduce and the barrier go by doorbell (shared-memory records and
    a futex word); over ``tcp`` the same messages go as TCP frames. Same bits, same modeled
    times, and a member with another shape is refused by name instead of being summed."""
    ranks = [1, 2, 5, 6]
    pids = {r: ray.get(cluster2x8.socket(r).ping.remote())["pid"] for r in ranks}
    inputs = [[np.random.default_rng(i).standard_normal(n).astype(np.float32) for i in ranks]
              for n in (7, 1000, 30_000)] + [[{"shape": [5000], "dtype": "bf16", "data": None}] * 4]
    got = {}
    for kind in ("shm", "tcp"):
        name = _group(cluster2x8, ranks, transport=kind)
        try:
            bells = [f for f in os.listdir(SHM_DIR) if "-bell." in f
                     and any(f"-{pid}-{r}-" in f for r, pid in pids.items())]
            assert len(bells) == (4 if kind == "shm" else 0), (kind, bells)
            results, times = [], []
            for xs in inputs:
                times.append(_quiet_allreduce(cluster2x8, ranks, name, xs, "star"))
                out = _call(cluster2x8, ranks, "allreduce", name, xs, algo="star")
                results.append([o["result"]["data"] for o in out])
            t0 = max(cluster2x8.call("now", ranks=ranks)) + 10**6
            cluster2x8.call("advance_to", t0, ranks=ranks)
            out = ray.get([cluster2x8.socket(r).barrier.remote(name) for r in ranks])
            times.append([o["end_ns"] - t0 for o in out])
            got[kind] = results, times
        finally:
            destroy_group(cluster2x8, ranks, name)
    (shm_bits, shm_times), (tcp_bits, tcp_times) = got["shm"], got["tcp"]
    assert shm_times == tcp_times
    for xs, a, b in zip(inputs, shm_bits, tcp_bits):
        for x, y in zip(a, b):
            assert (x is None and y is None) or np.array_equal(x, y)
        if not isinstance(xs[0], dict):  # materialized (the last inputs are phantom)
            exact = np.sum(np.array(xs, dtype=np.float64), axis=0)
            np.testing.assert_allclose(a[0], exact, rtol=1e-5, atol=1e-4)
    assert not [f for f in os.listdir(SHM_DIR) if "-bell." in f
                and any(f"-{pid}-" in f for pid in pids.values())], "doorbells left behind"
    alone = _group(cluster2x8, [3])  # a group of one has a doorbell and nobody to ring
    try:
        out = ray.get(cluster2x8.socket(3).barrier.remote(alone))
        assert out["end_ns"] == out["start_ns"]
    finally:
        destroy_group(cluster2x8, [3], alone)
    name = _group(cluster2x8, ranks)
    try:
        xs = [np.ones(5, np.float32)] * 3 + [np.ones(6, np.float32)]
        refs = [cluster2x8.socket(r).allreduce.remote(name, x, algo="star")
                for r, x in zip(ranks, xs)]
        for ref in refs:
            with pytest.raises(CollectiveError, match="member 3 has 6 elements of <f4 for this "
                               "AllReduce, member 0 has 5 elements of <f4"):
                ray.get(ref, timeout=30)
    finally:
        destroy_group(cluster2x8, ranks, name)


def test_bench_rows_follow_nccl_tests_definitions(cluster2x8):
    from sn40l.collectives.bench import parse_sizes, run

    assert parse_sizes("4K, 1M,64") == [4096, 2**20, 64]
    with pytest.raises(ConfigError, match="'4X'"):
        parse_sizes("4X")
    rows = run(cluster2x8, list(range(4)), [4096, 2**20], iters=2)
    for r in rows:
        assert r["algbw_GBps"] == pytest.approx(r["bytes"] / r["wall_s"] / 1e9)
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 2 * 3 / 4)
        assert r["modeled_s"] > 0 and r["bound_s"] > 0
    # modeled 1 MiB ring on 4 sockets: 2*3*(1us + 1MiB/(4*100GB/s)); fp32 bytes as sent
    assert rows[1]["modeled_s"] == pytest.approx(6 * (1e-6 + 2**20 / 4 / 100e9), rel=0.01)


def test_hierarchical_beats_the_flat_ring_across_nodes(cluster2x8):
    ranks = list(range(16))
    name = _group(cluster2x8, ranks)
    size = 4 * 2**20
    phantom = [{"shape": [size], "dtype": "bf16", "data": None}] * 16
    try:
        flat = max(_quiet_allreduce(cluster2x8, ranks, name, phantom, "ring"))
        hier = max(_quiet_allreduce(cluster2x8, ranks, name, phantom, "hierarchical"))
        auto = max(_quiet_allreduce(cluster2x8, ranks, name, phantom, "auto"))
    finally:
        destroy_group(cluster2x8, ranks, name)
    assert hier < flat and auto == hier
    with pytest.raises(ConfigError, match="does not span several nodes"):
        name = _group(cluster2x8, [0, 1, 2])
        try:
            ray.get(cluster2x8.socket(0).allreduce.remote(name, np.ones(4, np.float32),
                                                          algo="hierarchical"))
        finally:
            destroy_group(cluster2x8, [0, 1, 2], name)
