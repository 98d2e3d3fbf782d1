"""Memory tiers: first-fit allocation, fragmentation, coalescing, OOM message, read-only,
phantom accounting. Pure Python: no Ray needed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from sn40l.errors import OutOfDeviceMemory, PhantomDataError, RegionError
from sn40l.hardware import load_profile
from sn40l.socket import MemoryTier, Socket, SocketId, Tensor, Tier


def _t(nbytes: int) -> Tensor:
    return Tensor.phantom((nbytes,), "uint8")


def test_first_fit_fragmentation_and_coalescing():
    m = MemoryTier(Tier.HBM, 10 * 256, socket="s", alignment=256)
    for i in range(10):
        m.allocate(f"r{i}", _t(256))
    assert m.free == 0
    for i in (1, 2, 5, 7):
        m.release(f"r{i}")
    m.check()
    # holes: [256..768) (2 blocks), [1280..1536), [1792..2048)
    assert m.free_blocks() == [(256, 512), (1280, 256), (1792, 256)]
    assert m.largest_free == 512
    with pytest.raises(OutOfDeviceMemory):  # 768 bytes free in total but no hole fits
        m.allocate("big", _t(768))
    assert m.allocate("two", _t(512)).offset == 256  # first fit
    m.release("two")
    m.release("r6")  # joins the holes at 1280 and 1792 into [1280..2048)
    assert m.free_blocks() == [(256, 512), (1280, 768)]
    m.check()
    for name in ("r0", "r3", "r4", "r8", "r9"):
        m.release(name)
    assert m.free_blocks() == [(0, 2560)] and m.used == 0
    m.check()


def test_alignment_rounds_up():
    m = MemoryTier(Tier.SRAM, 4096, alignment=256)
    r = m.allocate("a", _t(1))
    assert r.size == 256 and r.nbytes == 1
    assert m.allocate("b", _t(257)).offset == 256 and m.used == 256 + 512


def test_oom_message_names_socket_tier_sizes():
    m = MemoryTier(Tier.HBM, 1024, socket="n1s3", alignment=256)
    m.allocate("a", _t(512))
    with pytest.raises(OutOfDeviceMemory) as err:
        m.allocate("kv", _t(1000))
    msg = str(err.value)
    assert "HBM" in msg and "n1s3" in msg and "requested 1000 bytes" in msg
    assert "512 bytes free" in msg and "largest free block 512 bytes" in msg and "'kv'" in msg
    assert err.value.requested == 1000 and err.value.free == 512


def test_duplicate_and_missing_regions():
    m = MemoryTier(Tier.DDR, 4096)
    m.allocate("w", _t(10))
    with pytest.raises(RegionError, match="already exists"):
        m.allocate("w", _t(10))
    with pytest.raises(RegionError, match="no region 'x'"):
        m.release("x")


def test_read_only_region_refuses_update():
    s = Socket(SocketId("c", 0, 0, 8), load_profile())
    s.write("w", "hbm", Tensor.of(np.ones(4, np.float32), "bf16"), read_only=True)
    with pytest.raises(RegionError, match="read-only"):
        s.update("w", Tensor.of(np.zeros(4, np.float32), "bf16"))
    s.write("kv", "hbm", Tensor.of(np.ones(4, np.float32), "bf16"))
    assert s.update("kv", Tensor.of(np.zeros(4, np.float32), "bf16")).dirty


def test_bf16_accounting_is_two_bytes_whatever_numpy_computes_in():
    t = Tensor.of(np.ones((3, 5), np.float64), "bf16")
    assert t.nbytes == 30 and t.data.dtype == np.float32


def test_phantom_data_read_raises():
    with pytest.raises(PhantomDataError, match=r"\(7, 7\)"):
        Tensor.phantom((7, 7)).data


def test_phantom_trillion_parameter_scale_costs_kilobytes():
    """1.4 TiB of phantom DDR on each of 16 sockets: host memory stays in kilobytes."""
    profile = load_profile()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sockets = [Socket(SocketId("c", i // 8, i % 8, 8), profile, trace_capacity=16)
               for i in range(16)]
    for s in sockets:
        for layer in range(14):  # 14 x 100 GiB = 1.4 TiB of phantom weights per socket
            s.alloc(f"w{layer}", "ddr", (50 * 2**30,), "bf16", phantom=True, read_only=True)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert all(s.tiers[Tier.DDR].used == 14 * 100 * 2**30 for s in sockets)
    assert grown < 1_000_000, f"phantom accounting of 22 TiB cost {grown} bytes of host memory"
