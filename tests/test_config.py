import pytest
import yaml

from raykd.config import ConfigError, JobConfig, apply_override, load_config, reference_markdown


def write(tmp_path, obj):
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(obj))
    return p


def test_defaults_and_overrides_are_typed(tmp_path):
    path = write(tmp_path, {"run_dir": "r", "data": {"path": "x"}})
    cfg = load_config(
        path,
        ["train.lambda_sup=0.1", "candidates.m=12", "data.splits.eval=test", "train.use_gpu=true"],
    )
    assert cfg.train.lambda_sup == 0.1
    assert cfg.candidates.m == 12
    assert cfg.data.splits.eval == "test"
    assert cfg.data.splits.train == "train"
    assert cfg.train.use_gpu is True


def test_run_dir_override_and_list_values(tmp_path):
    cfg = load_config(write(tmp_path, {}), ["mining.sources=[bm25, dense]"], run_dir="s3://b/r")
    assert cfg.run_dir == "s3://b/r"
    assert cfg.mining.sources == ["bm25", "dense"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=many", "train.epochs: Input should be a valid integer"),
        ("train.epoch=3", "train.epoch: unknown key"),
        ("candidates.strategy=best", "candidates.strategy: Input should be"),
        ("nosuch.x=1", "nosuch: unknown key"),
        ("augment.mask_ratios=[0.2, 1.5]", "augment.mask_ratios: mask ratios must lie in (0, 1)"),
    ],
)
def test_bad_values_name_the_dotted_path(tmp_path, override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {}), [override])
    assert expected in str(err.value)
    assert "job.yaml" in str(err.value)


def test_unknown_key_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher\.modle: unknown key"):
        load_config(write(tmp_path, {"teacher": {"modle": "x"}}))


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected dotted.path=value"):
        apply_override({}, "train.epochs")
    with pytest.raises(ConfigError, match="not a section"):
        apply_override({"train": 3}, "train.epochs=2")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_every_shipped_job_validates():
    from pathlib import Path

    jobs = sorted((Path(__file__).parents[1] / "jobs").glob("*.yaml"))
    assert jobs, "no job files"
    for job in jobs:
        assert isinstance(load_config(job), JobConfig), job


def test_reference_lists_interface_fields():
    ref = reference_markdown()
    for key in (
        "run_dir",
        "data.format",
        "data.path",
        "data.splits.train",
        "data.splits.eval",
        "data.max_train_queries",
        "teacher.model",
        "student.model",
        "candidates.strategy",
        "candidates.m",
        "candidates.n_strata",
        "train.lambda_sup",
        "train.epochs",
        "train.num_workers",
        "train.use_gpu",
    ):
        assert f"| `{key}` |" in ref, key


def test_readme_reference_is_current():
    from pathlib import Path

    from raykd.config import REFERENCE_END, REFERENCE_START

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split(REFERENCE_START, 1)[1].split(REFERENCE_END, 1)[0].strip()
    assert block == reference_markdown(), "run: raykd config reference --write README.md"


def test_method_defaults_are_the_papers():
    """A default that departs from the paper is a bug unless documented: ADAM §3.2 (no softmax
    temperature), §4.3 (m = 10, 5 masked positives at 0.15-0.55, λ = 0.01, lr 5e-5, batch 128,
    warm-up 100, lengths 32 / 128, m originals drawn at random); Jang et al. (equal-width
    strata, equal quotas: the whole score spectrum)."""
    cfg = JobConfig()
    tr, c = cfg.train, cfg.candidates
    assert tr.loss.teacher_temperature == tr.loss.student_temperature == tr.sup_temperature == 1.0
    assert cfg.student.scale == 1.0
    assert (tr.objective, tr.loss.name, tr.lambda_sup) == ("kd_sup", "kl", 0.01)
    assert (tr.lr, tr.batch_size, tr.warmup_steps) == (5e-5, 128, 100)
    assert (cfg.student.max_query_length, cfg.student.max_passage_length) == (32, 128)
    assert (c.m, c.n_masked, c.dark_base) == (10, 5, "random")
    assert cfg.augment.mask_ratios == [0.15, 0.25, 0.35, 0.45, 0.55]
    assert (c.binning, c.allocation) == ("equal_width", "equal")


def test_loss_settings_exist_only_for_their_loss(tmp_path):
    """train.loss is a union on its name: kl carries the temperatures, margin_mse and ranknet
    have none, so a temperature given to them is an error, not a silent no-op."""
    cfg = load_config(None, ["train.loss={name: kl, teacher_temperature: 0.05}"])
    assert (cfg.train.loss.teacher_temperature, cfg.train.teacher_temperature) == (0.05, 0.05)
    cfg = load_config(None, ["train.loss=ranknet", "candidates.strategy=topk"])
    assert cfg.train.loss.name == "ranknet" and cfg.train.teacher_temperature == 1.0
    with pytest.raises(
        ConfigError, match=r"train\.loss\.teacher_temperature: unknown key for name 'margin_mse'"
    ):
        load_config(
            None,
            ["train.loss={name: margin_mse, teacher_temperature: 2}", "candidates.strategy=topk"],
        )
    with pytest.raises(ConfigError, match="'dark' is distilled with kl"):
        load_config(None, ["train.loss=margin_mse", "candidates.strategy=dark"])
    with pytest.raises(ConfigError, match=r"now train\.loss\.teacher_temperature"):
        load_config(None, ["train.teacher_temperature=0.05"])


def test_tracking_section_defaults_switches_and_bad_keys(tmp_path):
    cfg = load_config(write(tmp_path, {}))
    assert cfg.tracking.tensorboard and cfg.tracking.mlflow is None and cfg.tracking.wandb is None
    # ``true`` (or {}) turns a tracker on with its embedded defaults: SQLite store, offline W&B.
    cfg = load_config(write(tmp_path, {}), ["tracking.mlflow=true", "tracking.wandb={}"])
    assert cfg.tracking.mlflow.tracking_uri is None and cfg.tracking.mlflow.experiment == "raykd"
    assert (cfg.tracking.wandb.mode, cfg.tracking.wandb.project) == ("offline", "raykd")
    with pytest.raises(ConfigError, match=r"tracking\.wandb\.mode: Input should be"):
        load_config(write(tmp_path, {"tracking": {"wandb": {"mode": "cloud"}}}))
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.uri: unknown key"):
        load_config(write(tmp_path, {}), ["tracking.mlflow.uri=http://x"])


def test_embedded_mlflow_store_needs_a_local_run_dir(tmp_path):
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.tracking_uri is null with run_dir"):
        load_config(write(tmp_path, {}), ["tracking.mlflow=true"], run_dir="s3://b/r")
    cfg = load_config(
        write(tmp_path, {}), ["tracking.mlflow.tracking_uri=http://127.0.0.1:5000"], "s3://b/r"
    )
    assert cfg.tracking.mlflow.tracking_uri == "http://127.0.0.1:5000"
