"""A multi-node Ray on this machine, run as its own process: ``python tests/cluster/nodes.py``.

Each node is a real raylet with its own agents (``ray.cluster_utils.Cluster``, as Ray's own
tests do); nodes differ by their custom resources, as ``cluster.yaml``'s node types do. The test
process keeps its own session Ray, so the cluster lives here and is driven over stdin, a JSON
line per command, each answered by a JSON line on stdout:

    {"op": "add", "name": "scorer2", "num_cpus": 2, "resources": {"scorer": 2}}
        -> {"name": "scorer2", "node_id": "<hex>"}
    {"op": "remove", "name": "scorer2"}  -> {"removed": "scorer2"}

The first line out describes the head (GCS and dashboard addresses, session folder); end of
stdin shuts the cluster down. Every node inherits this process's environment (the S3 endpoint
and credentials, PATH to ``raykd``), as a cloud node gets it from its image.
"""

from __future__ import annotations

import json
import os
import sys


def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    from ray.cluster_utils import Cluster

    head = json.loads(sys.argv[1])
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head["num_cpus"],
            "resources": head["resources"],
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": head["dashboard_port"],
            # Not Ray's default port, which another Ray on this machine (the tests' own) holds.
            "dashboard_agent_listen_port": head["agent_port"],
            "object_store_memory": 200 * 1024 * 1024,
        },
    )
    nodes = {"head": cluster.head_node}
    _reply(
        {
            "gcs": cluster.address,
            "dashboard": f"http://{cluster.webui_url}",
            "session_dir": cluster.head_node.get_session_dir_path(),
            "node_id": cluster.head_node.node_id,
        }
    )
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "add":
            node = cluster.add_node(
                num_cpus=cmd["num_cpus"],
                resources=cmd["resources"],
                object_store_memory=200 * 1024 * 1024,
                # A folder of its own, as a machine of its own would have: nodes sharing one
                # session folder unpack a job's working_dir over each other (the driver's cwd
                # vanishes mid-run).
                temp_dir=os.path.join(os.environ["RAY_TMPDIR"], cmd["name"]),
                # ... and its own log monitor, which streams its workers' output to the drivers.
                include_log_monitor=True,
            )
            nodes[cmd["name"]] = node
            _reply({"name": cmd["name"], "node_id": node.node_id})
        elif cmd["op"] == "remove":
            cluster.remove_node(nodes.pop(cmd["name"]), allow_graceful=False)
            _reply({"removed": cmd["name"]})
    cluster.shutdown()


if __name__ == "__main__":
    main()
