"""On a Ray cluster with several Ray nodes, emulated node i runs on Ray node i.

Ray's own ``ray.cluster_utils.Cluster`` starts a head and a worker raylet on this machine, in a
child process (it cannot share the test session's Ray).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, ray
    from ray.cluster_utils import Cluster as RayCluster
    from sn40l.cluster import Cluster, ensure_ray
    rc = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1})
    rc.add_node(num_cpus=1)
    rc.wait_for_nodes()
    ensure_ray(rc.address)
    c = Cluster.start(nodes=2, sockets_per_node=8, name="multi")
    placement = {}
    for rank, h in enumerate(c.handles):
        placement[rank] = ray.get(h.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()))
    print(json.dumps({"pinned": list(c.spec.ray_nodes), "placement": placement}))
    c.stop()
    ray.shutdown()
    rc.shutdown()
""")


def test_emulated_nodes_are_pinned_to_ray_nodes():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    pinned = out["pinned"]
    assert len(set(pinned)) == 2
    for rank, node_id in out["placement"].items():
        assert node_id == pinned[int(rank) // 8], (rank, node_id)
