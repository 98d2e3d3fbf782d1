"""Bad input through the real CLI (subprocesses): each case exits non-zero with one message
that names the value, no traceback, nothing started and nothing left behind; and a failure
inside a socket actor reaches the user as the cause's own message, once.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time

import msgpack
import pytest
import ray

from sn40l.cli import user_error
from sn40l.compiler import CompileConfig, compile_model
from sn40l.compiler.pef import MAGIC, VERSION


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-input")
    art = compile_model(CompileConfig("tiny", tp=8, seq_len=64))
    art.save(d / "tiny.pef")
    plan = dict(art.plan, model=dict(art.plan["model"], vocab=400000))
    payload = msgpack.packb(plan, use_bin_type=True)
    (d / "crafted.pef").write_bytes(struct.pack(">8sI32s", MAGIC, VERSION,
                                                hashlib.sha256(payload).digest()) + payload)
    (d / "parts.yaml").write_text('partitions:\n  - {name: p, nodes: "sn[00-03]"}\n')
    (d / "parts-list.yaml").write_text('partitions:\n  - {name: p, nodes: [sn00]}\n')
    return d


def _cases(d) -> list[tuple[list[str], str]]:
    pef, long_prompt = str(d / "tiny.pef"), ",".join(["1"] * 70)
    return [  # (arguments, what the message must contain)
        (["run", pef, "--prompt-ids", "1,2", "--max-new-tokens", "-1"],
         "--max-new-tokens must be >= 1, got -1"),
        (["run", pef, "--prompt-ids", "1,2", "--max-new-tokens", "0"],
         "--max-new-tokens must be >= 1, got 0"),
        (["run", pef, "--prompt-ids", long_prompt], "70 prompt tokens"),
        (["run", pef, "--prompt-ids", "1,200"], "token id(s) [200]"),
        (["run", pef, "--prompt-ids", "1,-3"], "token id(s) [-3]"),
        (["run", pef, "--prompt-ids", "1", "--weights", "bogus"], "--weights 'bogus'"),
        (["run", pef, "--prompt-ids", "1", "--seed", "-1"], "--seed -1"),
        (["run", pef, "--prompt-ids", "a,b"], "--prompt-ids 'a,b'"),
        (["run", str(d / "crafted.pef"), "--prompt-ids", "1"], "shards.vocab"),
        (["run", str(d / "missing.pef"), "--prompt-ids", "1"], "missing.pef"),
        (["run", "gpt5", "--prompt-ids", "1"], "unknown model preset 'gpt5'"),
        (["run", "tiny", "--prompt-ids", "1", "--tp", "3"], "TP 3"),
        (["compile", "tiny", "--seq-len", "64", "-o", str(d / "no" / "dir" / "x.pef")],
         "no/dir/x.pef"),
        (["inspect", str(d / "crafted.pef")], "shards.vocab"),
        (["cluster", "up", "--name", "a:b"], "cluster name 'a:b'"),
        (["cluster", "up", "--partitions", str(d / "parts.yaml")], "unknown nodes"),
        (["cluster", "up", "--partitions", str(d / "parts-list.yaml")],
         "nodes ['sn00'] must be a host list string"),
        (["cluster", "up", "--address", "127.0.0.1:1", "--timeout", "60"], "127.0.0.1:1"),
        (["cluster", "up", "--timeout", "0"], "--timeout 0"),
        (["cluster", "up", "--nodes", "300"], "--nodes 300"),
        (["cluster", "status", "--name", "../x"], "cluster name '../x'"),
        (["cluster", "trace", "-o", str(d / "no" / "t.json")], "no/t.json"),
    ]


def test_bad_input_sweep(files, tmp_path):
    state = tmp_path / "state"
    env = dict(os.environ, SN40L_STATE_DIR=str(state))
    cases = _cases(files)
    results = []
    for i in range(0, len(cases), 4):  # four at a time: each is one Python start-up
        t0 = time.monotonic()
        batch = [(args, needle, subprocess.Popen(
            [sys.executable, "-m", "sn40l.cli", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path))
            for args, needle in cases[i:i + 4]]
        for args, needle, proc in batch:
            out, err = proc.communicate(timeout=120)
            results.append((args, needle, proc.returncode, out, err, time.monotonic() - t0))
    for args, needle, code, out, err, wall in results:
        assert code != 0, (args, out, err)
        assert "Traceback" not in err and "Traceback" not in out, (args, err)
        assert needle in err, (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        if "--timeout" in args:  # `--address 127.0.0.1:1 --timeout 60` ran past 240 s
            assert wall < float(args[args.index("--timeout") + 1]) or "--timeout 0" in err
    left = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []
    assert [p for p in left if not p.endswith(("/", "clusters"))] == [], left
    assert not (files / "no").exists()


def test_remote_failure_is_unwrapped_to_its_cause(cluster2x8):
    ref = cluster2x8.socket(0).engine_generate.remote("no-such-model", [1], 1)
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(ref)
    msg = user_error(info.value)
    assert msg.startswith("no model 'no-such-model' loaded on socket")
    assert "Traceback" not in msg and "\n" not in msg
    assert user_error(ValueError("a bug")) is None  # bugs keep their traceback
