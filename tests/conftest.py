"""One Ray session for the whole test run, and emulated clusters on it.

Tests use real socket actors. ``cluster2x8`` is shared by tests that leave it as they found it;
``make_cluster`` gives a test its own cluster (for leasing, killing sockets, odd shapes) and stops
it afterwards. ``second_user`` is a real unprivileged OS user, for tests of who may do what.
"""

from __future__ import annotations

import itertools
import logging
import os
import pwd
import subprocess

import pytest
import ray

from sn40l.cluster import NAMESPACE, Cluster


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory):
    """Every test run gets its own SN40L_STATE_DIR; nothing touches ~/.sn40l."""
    path = tmp_path_factory.mktemp("sn40l-state")
    old = os.environ.get("SN40L_STATE_DIR")
    os.environ["SN40L_STATE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SN40L_STATE_DIR", None)
    else:
        os.environ["SN40L_STATE_DIR"] = old


@pytest.fixture(scope="session")
def ray_session():
    """The one embedded Ray cluster of this test session."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), namespace=NAMESPACE,
                 include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=False)
    yield
    ray.shutdown()


_names = itertools.count()


@pytest.fixture
def make_cluster(ray_session):
    """Factory: ``make_cluster(nodes=1, sockets_per_node=8, profile='sn40l')``; stopped after."""
    made: list[Cluster] = []

    def factory(nodes: int = 1, sockets_per_node: int | None = None, profile="sn40l",
                **kwargs) -> Cluster:
        name = kwargs.pop("name", None) or f"t{os.getpid()}x{next(_names)}"
        cluster = Cluster.start(nodes=nodes, sockets_per_node=sockets_per_node,
                                profile=profile, name=name, **kwargs)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster2x8(ray_session):
    """A shared 2-node x 8-socket SN40L cluster. Tests free what they allocate on it."""
    cluster = Cluster.start(nodes=2, sockets_per_node=8, name="shared2x8")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def second_user():
    """A fresh unprivileged OS user (``useradd -m``, a unique name), its passwd entry. Its
    processes are killed and it is removed afterwards, even when a test failed."""
    import psutil

    if os.geteuid() != 0:
        pytest.skip("creating an OS user needs root (CI runs the suite as root)")
    name = f"sn40l{os.getpid()}"
    made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    try:
        yield pwd.getpwnam(name)
    finally:
        uid = pwd.getpwnam(name).pw_uid
        for p in psutil.process_iter(["uids"]):
            try:
                if p.info["uids"] and p.info["uids"].real == uid:
                    p.kill()
            except psutil.Error:
                pass
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
