"""Whether a worker or an actor can ever be placed: checked before a pool or a trainer starts.

Ray queues a task, an actor or a placement group that no node can hold, and waits for a node
that offers it; with no autoscaler to add one it waits forever, silently. ``require_fits`` turns
that into one line naming the config key: the request is compared with each alive node's total
resources and with each node type the autoscaler may add.

A request is given as *parts*: each config setting (its key and value, as the message shows it)
with the resources it asks of one node. Later parts override earlier ones resource by resource,
as the trainer's request is merged (``{"CPU": cpus_per_worker, **worker_resources}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from raykd.config import ActorPoolSpec, ConfigError

log = logging.getLogger(__name__)

Parts = Mapping[str, Mapping[str, float]]

# The autoscaler's status in the GCS's key-value store; its node types, when it has its own.
AUTOSCALING_STATUS = "__autoscaling_status"


def offers(nodes: Iterable[Mapping[str, Any]], cluster_config: Any = None) -> list[dict]:
    """What one node can offer: each alive node's total resources (``ray.nodes()`` rows), and
    each node type of the autoscaler's ``ClusterConfig`` that it may launch (max_count != 0)."""
    out = [dict(n["Resources"]) for n in nodes if n.get("Alive")]
    if cluster_config is not None:
        out += [
            {k: float(v) for k, v in group.resources.items()}
            for group in cluster_config.node_group_configs
            if group.max_count != 0
        ]
    return out


def shortfall(
    parts: Parts, nodes: Iterable[Mapping[str, Any]], cluster_config: Any = None
) -> str | None:
    """None when some alive node, or some node type the autoscaler may add, offers the whole
    request; else one line naming the part to change and what no node offers."""
    bundle: dict[str, float] = {}
    owner: dict[str, str] = {}
    for label, part in parts.items():
        for name, amount in part.items():
            bundle[name], owner[name] = amount, label
    bundle = {k: v for k, v in bundle.items() if v > 0}
    options = offers(nodes, cluster_config)
    if any(all(o.get(k, 0) >= v for k, v in bundle.items()) for o in options):
        return None
    for name, amount in bundle.items():
        most = max((o.get(name, 0) for o in options), default=0)
        if most >= amount:
            continue
        if most == 0 and name == "GPU":
            return (
                f"{owner[name]}: this Ray cluster has no GPUs, and no autoscaler node type adds one"
            )
        if most == 0:
            names = sorted({k for o in options for k in o if not k.startswith("node:")})
            return (
                f"{owner[name]}: no node of this Ray cluster offers {name}, and no autoscaler "
                f"node type adds it (nodes offer: {', '.join(names)})"
            )
        return (
            f"{owner[name]}: no node of this Ray cluster offers {amount:g} {name}, and no "
            f"autoscaler node type adds one (at most {most:g} per node)"
        )
    labels = " + ".join(dict.fromkeys(owner[k] for k in bundle))
    return (
        f"{labels}: no node of this Ray cluster offers {bundle} together, and no autoscaler "
        "node type adds one"
    )


def require_fits(parts: Parts) -> None:
    """Raise ConfigError when no node of the connected Ray cluster can ever hold the request
    (see ``shortfall``); when an autoscaler runs whose node types are unknown, say nothing."""
    import ray
    import ray._private.state
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    nodes = ray.nodes()
    if shortfall(parts, nodes) is None:
        return
    if ray.util.client.ray.is_connected():
        return  # Ray Client: the cluster's autoscaler state is not readable from here
    config = ray._private.state.state.get_cluster_config()
    if config is None and (
        is_autoscaler_v2(fetch_from_server=True)
        or has_own_node_types(_internal_kv_get(AUTOSCALING_STATUS))
    ):
        # Ray 2.60's autoscalers do not publish their node types (get_cluster_config() is None
        # under `ray up`), so one of them may still add a node that holds it. (Autoscaler v2
        # shows no types in its status either: it is given the benefit of the doubt.)
        log.warning("%s: no node offers it yet; the autoscaler may add one", " + ".join(parts))
        return
    reason = shortfall(parts, nodes, config)
    if reason is not None:
        raise ConfigError(reason)


def has_own_node_types(status: bytes | None) -> bool:
    """Whether the autoscaler status (the GCS's ``__autoscaling_status``) is that of one with node
    types of its own (cluster.yaml's, KubeRay's): a local Ray's read-only autoscaler names each
    node's type after the node (``node_<id>``)."""
    if not status:
        return False
    mapping = json.loads(status).get("autoscaler_report", {}).get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in mapping.items())


def require_pool_fits(key: str, actors: ActorPoolSpec, num_cpus: float | None = None) -> None:
    """``require_fits`` for a Ray Data actor pool configured at ``key`` (e.g. "teacher.actors"):
    each actor takes ``num_cpus`` CPUs (Ray Data's default 1, GPU actors too), ``num_gpus`` and
    ``resources``."""
    cpus = num_cpus or 1
    if actors.torch_threads is not None and cpus == actors.torch_threads:
        cpu_label = f"{key}.torch_threads {actors.torch_threads}"
    else:
        cpu_label = f"{key} ({cpus:g} CPU per actor)"
    require_fits(
        {
            cpu_label: {"CPU": cpus},
            f"{key}.num_gpus {actors.num_gpus:g}": {"GPU": actors.num_gpus},
            f"{key}.resources {actors.resources}": actors.resources,
        }
    )
