"""Whether a request fits a Ray cluster, decided from hand-written ``ray.nodes()`` rows and an
autoscaler ClusterConfig built by hand (no Ray running)."""

from __future__ import annotations

import json

from ray.core.generated.autoscaler_pb2 import ClusterConfig

from raykd.on_ray.capacity import has_own_node_types, shortfall

HEAD = {
    "Alive": True,
    "Resources": {
        "CPU": 2.0,
        "memory": 8e9,
        "object_store_memory": 2e9,
        "node:__internal_head__": 1.0,
        "node:10.0.0.1": 1.0,
    },
}
SCORER = {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0, "scorer": 1.0}}
DEAD_GPU = {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0, "on_demand": 1.0}}

TRAIN = {"train.cpus_per_worker 0.5": {"CPU": 0.5}}


def autoscaler(*groups: tuple[str, dict, int]) -> ClusterConfig:
    config = ClusterConfig()
    for name, resources, max_count in groups:
        group = config.node_group_configs.add(name=name, max_count=max_count)
        for k, v in resources.items():
            group.resources[k] = v
    return config


def test_a_request_some_alive_node_offers_fits():
    assert shortfall({**TRAIN, "train.worker_resources {}": {}}, [HEAD]) is None
    pool = {"teacher.actors (1 CPU per actor)": {"CPU": 1}, "teacher.actors.num_gpus 1": {"GPU": 1}}
    assert shortfall(pool, [HEAD, SCORER]) is None
    # A zero amount asks for nothing (num_gpus 0: a CPU pool).
    assert shortfall({"teacher.actors.num_gpus 0": {"GPU": 0.0}}, [HEAD]) is None


def test_a_custom_resource_no_node_offers_names_the_key_and_what_nodes_offer():
    parts = {**TRAIN, "train.worker_resources {'on_demand': 1.0}": {"on_demand": 1.0}}
    # Dead nodes offer nothing.
    assert shortfall(parts, [HEAD, SCORER, DEAD_GPU]) == (
        "train.worker_resources {'on_demand': 1.0}: no node of this Ray cluster offers "
        "on_demand, and no autoscaler node type adds it (nodes offer: CPU, GPU, memory, "
        "object_store_memory, scorer)"
    )


def test_gpus_on_a_cluster_without_any():
    parts = {
        "mining.actors (1 CPU per actor)": {"CPU": 1},
        "mining.actors.num_gpus 0.5": {"GPU": 0.5},
    }
    assert shortfall(parts, [HEAD, DEAD_GPU]) == (
        "mining.actors.num_gpus 0.5: this Ray cluster has no GPUs, and no autoscaler node type "
        "adds one"
    )


def test_more_of_a_resource_than_any_node_has():
    parts = {"teacher.actors.torch_threads 8": {"CPU": 8}}
    assert shortfall(parts, [HEAD, SCORER]) == (
        "teacher.actors.torch_threads 8: no node of this Ray cluster offers 8 CPU, and no "
        "autoscaler node type adds one (at most 4 per node)"
    )


def test_resources_offered_only_on_different_nodes():
    gpu_node = {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}
    parts = {
        "eval.actors (1 CPU per actor)": {"CPU": 1},
        "eval.actors.num_gpus 1": {"GPU": 1},
        "eval.actors.resources {'on_demand': 1}": {"on_demand": 1},
    }
    head = {"Alive": True, "Resources": {"CPU": 2.0, "on_demand": 1.0}}
    assert shortfall(parts, [head, gpu_node]) == (
        "eval.actors (1 CPU per actor) + eval.actors.num_gpus 1 + eval.actors.resources "
        "{'on_demand': 1}: no node of this Ray cluster offers {'CPU': 1, 'GPU': 1, "
        "'on_demand': 1} together, and no autoscaler node type adds one"
    )


def test_a_later_part_overrides_an_earlier_one_and_takes_the_blame():
    # As fit() builds its bundle: {"CPU": cpus_per_worker, **worker_resources}.
    parts = {**TRAIN, "train.worker_resources {'CPU': 16}": {"CPU": 16}}
    reason = shortfall(parts, [HEAD])
    assert reason is not None
    assert reason.startswith("train.worker_resources {'CPU': 16}: no node of this Ray cluster")
    assert "16 CPU" in reason


def test_an_autoscaler_node_type_that_offers_it_counts():
    pool = {"teacher.actors.num_gpus 1": {"GPU": 1}, "teacher.actors.resources": {"scorer": 1}}
    spot = ("gpu_spot", {"CPU": 8, "GPU": 1, "scorer": 1}, 4)
    assert shortfall(pool, [HEAD], autoscaler(spot)) is None
    # max_count -1: no limit.
    assert shortfall(pool, [HEAD], autoscaler((*spot[:2], -1))) is None


def test_a_node_type_with_max_count_zero_adds_nothing():
    pool = {"teacher.actors.num_gpus 1": {"GPU": 1}}
    config = autoscaler(("gpu_spot", {"CPU": 8, "GPU": 1}, 0), ("cpu", {"CPU": 16}, 10))
    assert shortfall(pool, [HEAD], config) == (
        "teacher.actors.num_gpus 1: this Ray cluster has no GPUs, and no autoscaler node type "
        "adds one"
    )
    # The node types' resources are listed with the alive nodes'.
    reason = shortfall({"train.worker_resources {'x': 1}": {"x": 1}}, [], config)
    assert reason is not None and reason.endswith("(nodes offer: CPU)")


def test_a_local_rays_read_only_autoscaler_has_no_node_types_of_its_own():
    node = "5d51b8052e323f94cc1f5927781b9f4f856b8119a1ab90df99631cf3"
    local = {"autoscaler_report": {"node_type_mapping": {node: f"node_{node}"}}}
    assert not has_own_node_types(json.dumps(local).encode())
    assert not has_own_node_types(None)
    launched = {"autoscaler_report": {"node_type_mapping": {"10.0.0.1": "head", "10.0.0.2": "gpu"}}}
    assert has_own_node_types(json.dumps(launched).encode())
