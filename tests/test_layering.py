"""The dependency direction of DESIGN.md holds: lower layers never import higher ones or Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module,forbidden", [
    ("sn40l.hardware", {"ray", "sn40l.socket", "sn40l.cluster", "sn40l.compiler"}),
    ("sn40l.socket", {"ray", "sn40l.cluster", "sn40l.collectives", "sn40l.scheduler",
                      "sn40l.coe"}),
    ("sn40l.cli", {"ray", "numpy"}),  # commands import what they need when they run
    ("sn40l.scheduler.cli", {"ray", "numpy"}),  # a Slurm command is one socket round trip
])
def test_lower_layers_do_not_import_higher_ones(module, forbidden):
    loaded = _modules_after_import(module)
    assert not forbidden & loaded, f"{module} pulled in {sorted(forbidden & loaded)}"


def test_the_package_does_not_shadow_the_standard_socket_module():
    code = "import sn40l.socket, socket; print(socket.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "sn40l" not in out.stdout
