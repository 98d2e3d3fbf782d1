"""How a Slurm command reaches its controller: connect, or start the controller first.

Kept apart from :mod:`sn40l.scheduler.cli` so that every command module (``srun`` too) imports
it without importing the command table. Imports neither Ray nor numpy until a controller must
be started.
"""

from __future__ import annotations

from sn40l.scheduler.client import Client, ControllerUnavailable


def connect(prog: str) -> Client:
    """A client of this cluster's controller; starts the controller if the cluster runs
    without one (the first Slurm command after ``sn40l cluster up`` pays for connecting to
    Ray once; the controller is detached and serves every later command)."""
    client = Client()
    try:
        client.ping()
        return client
    except ControllerUnavailable:
        pass
    from sn40l.cluster.record import read_record

    record = read_record(client.cluster)
    if record is None:
        raise ControllerUnavailable(
            f"Unable to contact slurm controller (connect failure): no cluster "
            f"{client.cluster!r} is running; start one with 'sn40l cluster up'")
    from sn40l.cluster.cluster import ensure_ray
    from sn40l.scheduler.controller import start_controller

    ensure_ray(record["address"], auth=record.get("auth"))
    start_controller(client.cluster, partitions=record.get("partitions"))
    return client
