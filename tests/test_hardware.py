"""Hardware profiles and units: exact parsing, validation messages, the shipped numbers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from sn40l.errors import ProfileError, UnitError
from sn40l.hardware import (PROFILE_NAMES, Profile, load_profile, parse_bandwidth, parse_bytes,
                            parse_flops, parse_time_ns)


@pytest.mark.parametrize("text,expected", [
    ("64GiB", 64 * 2**30), ("520MiB", 520 * 2**20), ("1.5TiB", 3 * 2**39),
    ("13.5GB", 13_500_000_000), ("0B", 0), ("256B", 256), (4096, 4096), ("2KiB", 2048),
])
def test_parse_bytes_exact(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("1.8TB/s", 1_800_000_000_000), ("200GB/s", 200 * 10**9), ("2.039TB/s", 2_039 * 10**9),
    ("1KiB/s", 1024),
])
def test_parse_bandwidth_exact(text, expected):
    assert parse_bandwidth(text) == expected


def test_parse_flops_and_time_exact():
    assert parse_flops("638TFLOPS") == 638 * 10**12
    assert parse_time_ns("2us") == 2000
    assert parse_time_ns("1.5ms") == 1_500_000
    assert parse_time_ns("500ns") == 500
    assert parse_time_ns("30s") == 30 * 10**9


@pytest.mark.parametrize("bad", ["64 gigabytes", "GiB", "-1GiB", "0.5B", "1.2.3GB", True, None])
def test_parse_bytes_rejects(bad):
    with pytest.raises(UnitError) as err:
        parse_bytes(bad)
    assert repr(bad) in str(err.value)


def test_sn40l_profile_matches_the_paper_table():
    p = load_profile("sn40l")
    assert p.tier("sram").capacity == 520 * 2**20
    assert p.tier("hbm").capacity == 64 * 2**30
    assert p.tier("ddr").capacity == 1536 * 2**30
    assert p.bf16_flops == 638 * 10**12
    assert p.sockets_per_node == 8 and p.layouts == (8, 16)
    # sustained DDR->HBM copy (per socket) is below the DDR peak, and 8 sockets give >= 1 TB/s
    assert p.ddr_to_hbm.bandwidth < p.tier("ddr").bandwidth
    assert 8 * p.ddr_to_hbm.bandwidth >= 10**12
    assert p.with_sockets_per_node(16).sockets_per_node == 16


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_number_has_a_source_or_an_assumption(name):
    p = load_profile(name)
    for q in p.quantities.values():
        assert bool(q.source) != bool(q.assumption), q.path
    assert Profile.from_dict(p.to_dict()) == p


def test_baselines_are_hbm_only_with_their_host_links():
    a100, h100 = load_profile("dgx-a100"), load_profile("dgx-h100")
    assert a100.tier("ddr").capacity == 0 and h100.tier("ddr").capacity == 0
    # the paper's node-wide host-to-GPU figures (32 / 64 GB/s), shared by the 8 GPUs
    assert 8 * a100.link("host").bandwidth == 32 * 10**9 == 8 * a100.ddr_to_hbm.bandwidth
    assert 8 * h100.link("host").bandwidth == 64 * 10**9 == 8 * h100.ddr_to_hbm.bandwidth
    # the named alternative: one PCIe link per GPU, all in parallel
    a_pcie, h_pcie = load_profile("dgx-a100-pcie"), load_profile("dgx-h100-pcie")
    assert a_pcie.ddr_to_hbm.bandwidth == 32 * 10**9 and h_pcie.ddr_to_hbm.bandwidth == 64 * 10**9


def test_unknown_nested_key_and_bad_choice_are_refused(tmp_path):
    def stale(raw):
        raw["launch"]["software"] = {"value": "10us", "assumption": "old key"}
    with pytest.raises(ProfileError, match="unknown key 'launch.software'"):
        load_profile(_write(tmp_path, stale))

    def bad(raw):
        raw["execution"]["fusion_scope"]["value"] = "layer"
    with pytest.raises(ProfileError, match="'layer' is not allowed; allowed: decoder, operator"):
        load_profile(_write(tmp_path, bad))


def _write(tmp_path, mutate):
    raw = yaml.safe_load(open(load_profile.__globals__["resources"].files("sn40l.hardware")
                              .joinpath("profiles/sn40l.yaml")))
    mutate(raw)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_user_profile_loads(tmp_path):
    def bigger(raw):
        raw["name"] = "mine"
        raw["memory"]["hbm"]["capacity"]["value"] = "128GiB"
    p = load_profile(_write(tmp_path, bigger))
    assert p.name == "mine" and p.tier("hbm").capacity == 128 * 2**30


@pytest.mark.parametrize("mutate,needle", [
    (lambda r: r["memory"]["hbm"]["capacity"].update(value="-3GiB"), "memory.hbm.capacity"),
    (lambda r: r["memory"]["hbm"]["capacity"].update(value="64 lots"), "64 lots"),
    (lambda r: r["efficiency"]["hbm_fused"].update(value=1.5), "allowed 0.01 to 1"),
    (lambda r: r["links"]["p2p"].pop("latency"), "links.p2p.latency"),
    (lambda r: r["compute"]["bf16"].pop("source"), "exactly one of 'source' or 'assumption'"),
    (lambda r: r.update(speed=3), "unknown key(s) speed"),
    (lambda r: r["node"]["sockets_per_node"].update(value=12), "not in layouts"),
])
def test_bad_profile_values_name_key_value_and_rule(tmp_path, mutate, needle):
    with pytest.raises(ProfileError) as err:
        load_profile(_write(tmp_path, mutate))
    assert needle in str(err.value)


def test_unknown_profile_lists_the_shipped_ones():
    with pytest.raises(ProfileError) as err:
        load_profile("tpu-v9")
    assert "tpu-v9" in str(err.value) and "sn40l, dgx-a100, dgx-h100" in str(err.value)


def test_bad_layout_is_refused():
    with pytest.raises(ProfileError) as err:
        load_profile("sn40l").with_sockets_per_node(12)
    assert "12" in str(err.value) and "8, 16" in str(err.value)


def test_hw_show_cli():
    out = subprocess.run([sys.executable, "-m", "sn40l.cli", "hw", "show", "sn40l"],
                         capture_output=True, text=True, check=True).stdout
    assert "638 TFLOPS" in out and "Table II" in out and "64.0 GiB" in out
    bad = subprocess.run([sys.executable, "-m", "sn40l.cli", "hw", "show", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown profile 'nope'" in bad.stderr
