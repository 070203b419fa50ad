"""The train stage end to end on the demo collection: Ray Train + DeepSpeed on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raykd.config import TrackingSection
from raykd.run_dir import RunDir
from raykd.stages.pipeline import run_stage, stage_by_name
from tests.test_tracking import mlflow_history, mlflow_run, tensorboard_scalars
from tests.train_helpers import write_train_set


def train_config(demo_config, run_dir, strategy="topk", **train):
    raw = demo_config.model_dump(mode="json")
    raw["run_dir"] = str(run_dir)
    raw["candidates"]["strategy"] = strategy
    # Normalised embeddings need a scale for a peaked softmax (sentence-transformers uses 20).
    raw["student"]["scale"] = 20.0
    raw["train"].update({"report_every": 2, "warmup_steps": 2, "lr": 1e-3, **train})
    return type(demo_config).model_validate(raw)


def manifest_info(run: RunDir) -> dict:
    return run.read_json("manifests/train.json")["info"]


def test_export_loads_in_transformers_sentence_transformers_and_text_encoder(
    demo_collection, tmp_path
):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from raykd.retrieval.encoder import TextEncoder, pool
    from raykd.student.model import DualEncoder, load_student

    texts = ["alpha beta gamma", "a longer passage with several more words than the first one"]
    for pooling, normalize in (("mean", True), ("cls", False)):
        model = DualEncoder.from_pretrained(
            str(demo_collection.student_dir), pooling=pooling, normalize=normalize, scale=2.0
        )
        with torch.no_grad():  # make the weights differ from the init checkpoint
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        tok = AutoTokenizer.from_pretrained(demo_collection.student_dir)
        dest = tmp_path / f"student-{pooling}"
        model.save(dest, tok, max_query_length=16, max_passage_length=64)

        enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            ref = model.encode_passage(enc["input_ids"], enc["attention_mask"]).numpy()
            hf = AutoModel.from_pretrained(dest).eval()
            vec = pool(hf(**enc).last_hidden_state, enc["attention_mask"], pooling)
            if normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
        np.testing.assert_allclose(vec.numpy(), ref, atol=1e-5)

        st = SentenceTransformer(str(dest), device="cpu")
        assert st.max_seq_length == 64
        np.testing.assert_allclose(st.encode(texts, convert_to_numpy=True), ref, atol=1e-5)

        te = TextEncoder(str(dest), pooling=pooling, normalize=normalize, max_length=64)
        np.testing.assert_allclose(te.encode(texts), ref, atol=1e-5)

        back = load_student(dest)
        assert (back.pooling, back.normalize, back.scale) == (pooling, normalize, 2.0)


def test_separate_towers_save_query_tower(demo_collection, tmp_path):
    import torch
    from transformers import AutoTokenizer

    from raykd.retrieval.encoder import TextEncoder
    from raykd.student.model import DualEncoder, load_student, query_tower_dir

    model = DualEncoder.from_pretrained(str(demo_collection.student_dir), shared_towers=False)
    with torch.no_grad():
        for p in model.query_tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tok = AutoTokenizer.from_pretrained(demo_collection.student_dir)
    model.save(tmp_path / "s", tok, max_query_length=16, max_passage_length=64)
    qdir = query_tower_dir(tmp_path / "s")
    assert qdir.endswith("query_encoder")
    texts = ["alpha beta", "gamma delta epsilon"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        q_ref = model.encode_query(enc["input_ids"], enc["attention_mask"]).numpy()
        p_ref = model.encode_passage(enc["input_ids"], enc["attention_mask"]).numpy()
    assert not np.allclose(q_ref, p_ref, atol=1e-3)
    np.testing.assert_allclose(TextEncoder(qdir).encode(texts), q_ref, atol=1e-5)
    np.testing.assert_allclose(TextEncoder(str(tmp_path / "s")).encode(texts), p_ref, atol=1e-5)
    assert not load_student(tmp_path / "s").shared_towers


@pytest.mark.slow
def test_dark_applies_self_paced_subset(ray_session, demo_config, prepared_run, tmp_path):
    """ADAM §3.3 Eq. 8 ranks the global batch: 2 workers x 2 micro-batches of 2 keep as many
    rows per step as 1 worker with a micro-batch of 8 would (the ranking itself, per micro-batch
    and gathered: tests/test_selfpaced.py). The trackers (TensorBoard, MLflow from Ray Train's
    controller) get one point per optimizer step, with the kept ratio of each epoch."""
    workers = accum = 2
    cfg = train_config(
        demo_config,
        tmp_path / "run",
        "dark",
        epochs=2,
        batch_size=8,
        num_workers=workers,
        grad_accum=accum,
    )
    cfg.tracking = TrackingSection(mlflow={})
    run = RunDir.open(cfg.run_dir)
    n = write_train_set(prepared_run, run, "dark")
    assert run_stage(stage_by_name("train"), cfg, run)
    info = manifest_info(run)
    # Global batches of 8: epoch 1 keeps round(0.75 * 8) = 6, epoch 2 keeps 4.
    steps = n // 8
    assert info["batch_total"] == 2 * steps * 8
    assert info["kept_total"] == steps * 6 + steps * 4

    name = f"train-{run.read_json('manifests/train.json')['fingerprint'][:12]}"
    tb = tensorboard_scalars(run.path(f"tracking/tensorboard/{name}"))
    every_step = list(range(1, 2 * steps + 1))  # reports came every 2 steps (report_every)
    assert [s for s, _ in tb["train/loss"]] == every_step
    assert [v for _, v in tb["train/kept_ratio"]] == pytest.approx([0.75] * steps + [0.5] * steps)
    assert [v for _, v in tb["train/epoch"]] == [1] * steps + [2] * steps
    # The rate each step ran at: transformers' warm-up starts at 0 (warmup_steps 2, lr 1e-3).
    assert tb["train/lr"][:3] == [(1, 0.0), (2, pytest.approx(5e-4)), (3, pytest.approx(1e-3))]
    assert {"train/kd", "train/sup", "train/samples_per_s"} <= set(tb)
    client, found = mlflow_run(run.path("tracking"), name)
    assert [s for s, _ in mlflow_history(client, found.info.run_id, "train/loss")] == every_step
    assert found.info.status == "FINISHED"
    assert found.data.params["train.grad_accum"] == str(accum)


def _student_weights(run: RunDir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(run.path("student")) / "model.safetensors"))


@pytest.mark.slow
def test_train_seed_reaches_dropout_and_order(ray_session, demo_config, prepared_run, tmp_path):
    """The same seed trains the same student; another seed (dropout masks, shuffled order)
    trains a different one, so seeds of a deterministic strategy (topk) are real repeats."""
    weights = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = train_config(demo_config, tmp_path / name, epochs=1, batch_size=8, seed=seed)
        run = RunDir.open(cfg.run_dir)
        write_train_set(prepared_run, run, "topk")
        assert run_stage(stage_by_name("train"), cfg, run)
        weights[name] = _student_weights(run)
    assert weights["a"].keys() == weights["c"].keys()
    for key in weights["a"]:
        np.testing.assert_array_equal(weights["a"][key], weights["b"][key])
    assert any(not np.array_equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_unreadable_batch_size_is_an_input_error(ray_session, demo_config, prepared_run, tmp_path):
    from raykd.errors import InputError

    cfg = train_config(demo_config, tmp_path / "run", batch_size=1000)
    run = RunDir.open(cfg.run_dir)
    write_train_set(prepared_run, run, "topk")
    with pytest.raises(InputError, match="no full step"):
        run_stage(stage_by_name("train"), cfg, run)
    assert not run.exists("student")
