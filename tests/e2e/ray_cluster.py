"""A Ray cluster of several nodes on this one machine, all on loopback, for the multi-node
test: `python -m tests.e2e.ray_cluster SPEC_JSON` starts a head and one worker node per
entry of SPEC_JSON ({"nodes": [{"name": ..., "resources": {...}}, ...], "temp_dir": ...}),
prints one JSON line (the GCS address, and each node's id, name and raylet pid), and shuts
the whole cluster down on SIGTERM. Each worker node's raylet gets FARM_NODE=<name> in its
environment, so farm's executors and wardens there name their node as a machine of its own
would. Ray's token auth is on (RAY_AUTH_TOKEN from the environment)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback node addresses stay loopback

import ray._private.ray_constants as ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

ray_constants.ENABLE_RAY_CLUSTER = False


def main() -> None:
    spec = json.loads(sys.argv[1])
    common = {"node_ip_address": "127.0.0.1", "temp_dir": spec["temp_dir"]}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, **common},
                      shutdown_at_exit=True)  # fmt: skip
    nodes = [{"name": "head", "node_id": cluster.head_node.node_id,
              "raylet_pid": cluster.head_node.all_processes["raylet"][0].process.pid}]  # fmt: skip
    for n in spec["nodes"]:
        node = cluster.add_node(num_cpus=1, resources=n["resources"], env_vars={"FARM_NODE": n["name"]}, **common)
        nodes.append({"name": n["name"], "node_id": node.node_id, "raylet_pid": node.all_processes["raylet"][0].process.pid})
    print(json.dumps({"address": cluster.address, "nodes": nodes}), flush=True)

    def stop(*_: object) -> None:
        cluster.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
