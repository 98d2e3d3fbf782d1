"""`cluster up --address` against a Ray that wants a token: one line saying what to set when no
token (or a wrong one) is set here, at once; the session's Ray uses token authentication."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import ray


def _up(address: str, home, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    clean.update(HOME=str(home), SN40L_STATE_DIR=str(home / "state"), **env)
    return subprocess.run([sys.executable, "-m", "sn40l.cli", "cluster", "up", "--address",
                           address, "--name", "authprobe"], capture_output=True, text=True,
                          env=clean, timeout=120)


def test_token_auth_missing_or_wrong_is_one_line(ray_session, tmp_path):
    address = ray.get_runtime_context().gcs_address
    t0 = time.monotonic()
    res = _up(address, tmp_path)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "uses token authentication and no token is set here" in lines[0]
    assert "RAY_AUTH_TOKEN" in lines[0] and address in lines[0]
    res = _up(address, tmp_path, RAY_AUTH_TOKEN="0" * 32)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refused the token set here" in lines[0], res.stderr
    assert time.monotonic() - t0 < 30  # Ray's own retries took 22 s for the first alone
    assert not (tmp_path / "state" / "clusters" / "authprobe.json").exists()
