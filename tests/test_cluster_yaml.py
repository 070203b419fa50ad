"""cluster.yaml against Ray's own autoscaler schema; every job file against JobConfig."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from raykd.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(copy.deepcopy(_cluster())))


def test_cluster_yaml_node_types():
    cfg = _cluster()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert "head" in head["resources"] and "GPU" not in head["resources"]
    spot, train = types["gpu_spot"], types["gpu_train"]
    assert spot["min_workers"] == 0 and spot["max_workers"] > 1
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in train["node_config"]
    assert train["resources"]["on_demand"] >= 1 and spot["resources"]["scorer"] >= 1
    assert cfg["idle_timeout_minutes"] > 0
    assert any("[gpu,tune]" in c for c in cfg["setup_commands"])


def test_the_dashboard_listens_on_the_heads_loopback_only():
    # The Jobs API runs any code for whoever reaches it: submit through `ray dashboard`'s tunnel.
    start = " ".join(_cluster()["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    # `ray job stop` leaves the driver time to unwind (Ray's default is 3 s before SIGKILL).
    assert "RAY_JOB_STOP_WAIT_TIME_S=60 ray start --head" in start


def test_cluster_yaml_schema_rejects_a_typo():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    bad = _cluster()
    bad["available_node_types"]["gpu_spot"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(fillout_defaults(bad))


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("*.yaml")))
def test_every_job_file_validates(job):
    load_config(ROOT / "jobs" / job)


def test_msmarco_jobs_use_the_paper_settings_and_cluster_resources():
    for name in ("msmarco_adam", "msmarco_stratified", "tune_msmarco"):
        cfg = load_config(ROOT / "jobs" / f"{name}.yaml")
        assert cfg.data.format == "msmarco" and cfg.run_dir.startswith("s3://")
        assert (cfg.student.max_query_length, cfg.student.max_passage_length) == (32, 128)
        assert (cfg.train.batch_size, cfg.train.lr, cfg.train.warmup_steps) == (128, 5e-5, 100)
        assert cfg.train.use_gpu and cfg.train.zero_stage == 2 and cfg.train.bf16
        assert cfg.train.worker_resources == {"on_demand": 1}
        assert cfg.teacher.actors.num_gpus == cfg.eval.actors.num_gpus == 1
        assert cfg.teacher.actors.max_actors > cfg.teacher.actors.min_actors
        assert cfg.teacher.actors.resources == cfg.eval.actors.resources == {"scorer": 1}
    adam = load_config(ROOT / "jobs" / "msmarco_adam.yaml")
    assert adam.candidates.strategy == "dark" and adam.candidates.n_masked == 5
    assert adam.train.lambda_sup == 0.01 and adam.candidates.m == 10
    # ADAM §4.3: m originals drawn at random among the hard negatives, all of them twinned;
    # §3.2: neither softmax tempered.
    assert adam.candidates.dark_base == "random"
    assert (adam.augment.rein_pick, adam.augment.n_rein) == ("random", adam.candidates.m)
    assert adam.augment.mask_ratios == [0.15, 0.25, 0.35, 0.45, 0.55]
    tr = adam.train
    assert (tr.objective, tr.loss.name) == ("kd_sup", "kl")
    assert tr.loss.teacher_temperature == tr.loss.student_temperature == tr.sup_temperature == 1.0
    assert adam.student.scale == 1.0 and not adam.student.normalize
    strat = load_config(ROOT / "jobs" / "msmarco_stratified.yaml")
    assert (strat.mining.depth, strat.mining.n_random) == (100, 100)
    tune = load_config(ROOT / "jobs" / "tune_msmarco.yaml")
    assert tune.augment.n_rein >= 20  # m up to 20 in tune_spaces/
