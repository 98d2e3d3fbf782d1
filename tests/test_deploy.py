"""deploy/ against independent references: the Ray cluster launcher's own JSON schema (shipped
inside the ray package), KubeRay's RayCluster CRD schema (tests/fixtures/kuberay, strict about
unknown fields as `kubectl apply --validate=strict` is), the package's Ray requirement for the
image's pin, and the image's entrypoint script run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import ray
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _ray_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(Requirement(d) for d in project["dependencies"]
                if Requirement(d).name == "ray")


def test_ray_cluster_launcher_config_is_valid_and_launches_workers():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json")
                        .read_text())
    config = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    head = " ".join(config["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
    assert f"ray[default]=={ray.__version__}" in " ".join(config["setup_commands"])


def _strict(schema):
    """The CRD schema with unknown fields refused where Kubernetes would prune them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_kuberay_manifest_is_valid_against_the_crd_schema():
    schema = _strict(json.loads((FIXTURES / "kuberay" / "raycluster-v1-openapi.json")
                                .read_text()))
    manifest = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())
    jsonschema.validate(manifest, schema)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    spec = manifest["spec"]
    assert spec["rayVersion"] == ray.__version__
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    assert len(pods) >= 2
    for pod in pods:
        shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert shm, "a memory-backed volume for /dev/shm"
        (container,) = pod["containers"]
        assert container["image"] == pods[0]["containers"][0]["image"]
        assert {"name": shm[0]["name"], "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]
    # a misspelt field is refused, not pruned away
    bad = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())
    bad["spec"]["workerGroupSpecs"][0]["replica"] = 2
    try:
        jsonschema.validate(bad, schema)
        raise AssertionError("unknown field 'replica' was accepted")
    except jsonschema.ValidationError as exc:
        assert "replica" in exc.message


def test_dockerfile_pins_ray_and_ships_the_runtime():
    text = (DEPLOY / "Dockerfile").read_text()
    pin = re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1)
    assert pin == ray.__version__  # the Ray every node of the cluster must run
    assert _ray_requirement().specifier.contains(pin)
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    assert {"sn40l", "deploy", "benchmarks"} <= copied
    assert '"ray[default]==${RAY_VERSION}" ".[plot]"' in text
    assert 'ENTRYPOINT ["/usr/local/bin/sn40l-entrypoint"]' in text
    assert "COPY deploy/entrypoint.sh /usr/local/bin/sn40l-entrypoint" in text


def _entry(*args, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path:
        env["PATH"] = path
    return subprocess.run(["sh", str(DEPLOY / "entrypoint.sh"), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_entrypoint_runs_sn40l_commands_and_starts_ray(tmp_path):
    # any sn40l command, with or without the word sn40l (the real CLI, from this venv)
    venv_bin = str(Path(sys.executable).parent)
    path = f"{venv_bin}:{os.environ['PATH']}"
    shown = _entry("coe", "show", "deploy/coe/tiny4.yaml", path=path)
    assert shown.returncode == 0, shown.stderr
    assert "CoE tiny4: 4 experts" in shown.stdout
    assert _entry("sn40l", "hw", "show", path=path).returncode == 0
    # head and worker: the ray start commands, seen by a recording `ray` first on PATH
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "ray").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RAY_ARGS"\n')
    (stub / "ray").chmod(0o755)
    os.environ["RAY_ARGS"] = str(tmp_path / "args")
    try:
        assert _entry("head", "--num-cpus=2", path=f"{stub}:{path}").returncode == 0
        assert (tmp_path / "args").read_text().split() == [
            "start", "--head", "--port=6379", "--dashboard-host=0.0.0.0",
            "--disable-usage-stats", "--block", "--num-cpus=2"]
        assert _entry("worker", "10.0.0.1:6379", path=f"{stub}:{path}").returncode == 0
        assert (tmp_path / "args").read_text().split() == [
            "start", "--address=10.0.0.1:6379", "--disable-usage-stats", "--block"]
    finally:
        del os.environ["RAY_ARGS"]
    missing = _entry("worker", path=f"{stub}:{path}")
    assert missing.returncode == 2 and "needs the head's address" in missing.stderr
