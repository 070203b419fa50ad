"""mine: BM25 / dense / random / file pools, their merge, and the stage on the demo collection."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from raykd.config import Bm25Spec, validate
from raykd.data.passages import passage_text
from raykd.data.schemas import POOL
from raykd.errors import InputError
from raykd.mining.bm25 import BM25Retriever
from raykd.mining.file_pool import read_file_pool
from raykd.mining.pool_merge import merge_pools
from raykd.mining.random_pool import random_pool
from raykd.run_dir import RunDir
from raykd.stages.mine import corpus_pids, positive_judgements, positives_of, train_qids
from raykd.stages.pipeline import run_stage, stage_by_name


def _config(demo_config, run_dir, **mining):
    raw = demo_config.model_dump(mode="json")
    raw["run_dir"] = str(run_dir)
    raw["mining"].update(mining)
    return validate(raw, "test")


def _mine(cfg):
    run = RunDir.open(cfg.run_dir)
    run_stage(stage_by_name("prepare"), cfg, run)
    run_stage(stage_by_name("mine"), cfg, run)
    return run


def _table(run, rel):
    return pads.dataset(run.path(rel), filesystem=run.fs).to_table()


@pytest.fixture(scope="module")
def mined(ray_session, demo_config, tmp_path_factory):
    """The seed-000 recipe scaled down: BM25 top-30 plus 20 random."""
    cfg = _config(demo_config, tmp_path_factory.mktemp("mine") / "run", sources=["bm25", "random"])
    return cfg, _mine(cfg)


def _check_pool(run, cfg, pool):
    assert pool.schema == POOL
    split = cfg.data.splits.train
    qids = train_qids(run, split)
    positives = positives_of(positive_judgements(run, split))
    corpus = set(corpus_pids(run).to_pylist())
    rows = pool.to_pylist()
    assert {r["qid"] for r in rows} <= set(qids)
    assert all(r["pid"] in corpus for r in rows)
    assert not any(r["pid"] in positives[r["qid"]] for r in rows)
    pairs = [(r["qid"], r["pid"]) for r in rows]
    assert len(pairs) == len(set(pairs))
    return qids, positives, rows


def test_bm25_and_random_pool_is_the_seed000_recipe(mined):
    cfg, run = mined
    m = cfg.mining
    qids, positives, rows = _check_pool(run, cfg, _table(run, "pool"))
    manifest = run.read_json("manifests/mine.json")
    info = manifest["info"]
    assert info["bm25_rows"] == len(qids) * m.depth
    assert info["random_rows"] == len(qids) * m.n_random
    # Every row of every source is kept, dropped as a positive, or dropped as a duplicate.
    assert manifest["rows"]["pool"] + info["dropped_positives"] + info["dropped_duplicates"] == (
        len(qids) * (m.depth + m.n_random)
    )
    for qid in qids:
        mine = [r for r in rows if r["qid"] == qid]
        bm25 = [r["rank"] for r in mine if r["source"] == "bm25"]
        # BM25 ranks are a subset of 1..depth, only positives missing; scores descend with rank.
        assert set(bm25) <= set(range(1, m.depth + 1))
        assert len(bm25) >= m.depth - len(positives[qid])
        scores = [r["score"] for r in mine if r["source"] == "bm25"]
        assert scores == sorted(scores, reverse=True)
        assert sum(r["source"] == "random" for r in mine) <= m.n_random
        # Source priority: bm25 rows come first.
        sources = [r["source"] for r in mine]
        assert sources == sorted(sources, key=["bm25", "random"].index)


def test_bm25_top1_of_a_passage_text_is_that_passage(mined):
    _, run = mined
    corpus = _table(run, "corpus").to_pylist()
    retriever = BM25Retriever.from_corpus(run.path("corpus"), run.fs, Bm25Spec(k1=1.5, b=0.75))
    assert len(retriever) == len(corpus)
    sample = corpus[::97]
    pids, scores = retriever.retrieve([passage_text(r["title"], r["text"]) for r in sample], k=5)
    assert [p[0] for p in pids] == [r["pid"] for r in sample]
    assert scores.shape == (len(sample), 5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # k beyond the corpus is clipped; a query of unknown words still returns a ranking.
    pids, scores = retriever.retrieve(["zzzunknownzzz"], k=len(corpus) + 10)
    assert len(pids[0]) == len(corpus) and np.all(scores == 0)


def test_random_pool_is_exact_seeded_and_order_independent():
    corpus = pa.array([f"d{i}" for i in range(50)])
    a = random_pool(["q1", "q2", "q3"], corpus, 7, seed=3)
    assert a.schema == POOL
    counts = a.group_by("qid").aggregate([("pid", "count_distinct")]).to_pylist()
    assert sorted((c["qid"], c["pid_count_distinct"]) for c in counts) == [
        ("q1", 7),
        ("q2", 7),
        ("q3", 7),
    ]
    assert a.equals(random_pool(["q1", "q2", "q3"], corpus, 7, seed=3))
    assert not a.equals(random_pool(["q1", "q2", "q3"], corpus, 7, seed=4))
    alone = random_pool(["q2"], corpus, 7, seed=3)
    assert alone.column("pid").to_pylist() == [r["pid"] for r in a.to_pylist() if r["qid"] == "q2"]
    # Positives are removed afterwards: exactly n minus the positives that were drawn.
    q1 = set(alone.column("pid").to_pylist()[:2])
    merged, dropped = merge_pools([alone], {"q2": q1})
    assert merged.num_rows == 5 and dropped["dropped_positives"] == 2
    assert random_pool(["q"], corpus, 80, seed=0).num_rows == 50  # clipped to the corpus


def _pool(rows, source):
    return pa.table(
        {
            "qid": [r[0] for r in rows],
            "pid": [r[1] for r in rows],
            "rank": pa.array([r[2] for r in rows], pa.int32()),
            "score": pa.array([r[3] for r in rows], pa.float32()),
            "source": [source] * len(rows),
        },
        schema=POOL,
    )


def test_merge_keeps_the_first_source_and_drops_positives():
    bm25 = _pool([("q", "a", 1, 9.0), ("q", "b", 2, 8.0), ("q", "p", 3, 7.0)], "bm25")
    rand = _pool([("q", "b", 1, 0.0), ("q", "c", 2, 0.0), ("r", "a", 1, 0.0)], "random")
    merged, dropped = merge_pools([bm25, rand], {"q": {"p"}})
    assert [(r["qid"], r["pid"], r["rank"], r["source"]) for r in merged.to_pylist()] == [
        ("q", "a", 1, "bm25"),
        ("q", "b", 2, "bm25"),
        ("q", "c", 2, "random"),
        ("r", "a", 1, "random"),
    ]
    assert dropped == {"dropped_positives": 1, "dropped_duplicates": 1}
    merged, _ = merge_pools([rand, bm25], {"q": {"p"}})
    assert {r["pid"]: r["source"] for r in merged.to_pylist() if r["qid"] == "q"}["b"] == "random"
    # A positive found by two sources is dropped twice; "q"+"ab" and "qa"+"b" are not one key.
    both = _pool([("q", "p", 4, 0.0), ("q", "ab", 5, 0.0), ("qa", "b", 1, 0.0)], "random")
    merged, dropped = merge_pools([bm25, both], {"q": {"p"}})
    assert dropped == {"dropped_positives": 2, "dropped_duplicates": 0}
    assert [(r["qid"], r["pid"]) for r in merged.to_pylist()] == [
        ("q", "a"),
        ("q", "b"),
        ("q", "ab"),
        ("qa", "b"),
    ]


CORPUS = pa.array(["d1", "d2", "d3", "d4"])


def test_trec_file_pool_ranks_by_score_and_names_bad_lines(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 1.5 x\nq1 Q0 d3 2 2.5 x\n\nq2 Q0 d2 1 0.1 x\n")
    table, skipped = read_file_pool(str(path), "trec", {"q1", "q2"}, CORPUS, subset=False)
    assert [(r["qid"], r["pid"], r["rank"], r["source"]) for r in table.to_pylist()] == [
        ("q1", "d3", 1, "file"),
        ("q1", "d1", 2, "file"),
        ("q2", "d2", 1, "file"),
    ]
    assert skipped == 0
    path.write_text("q1 Q0 d1 1 1.5 x\nq1 Q0 d9 2 2.5 x\n")
    with pytest.raises(InputError, match=r"run.trec:2: pid 'd9'.*not in the corpus"):
        read_file_pool(str(path), "trec", {"q1"}, CORPUS, subset=False)
    path.write_text("q1 Q0 d1 1 1.5 x\nq7 Q0 d2 1 1.5 x\n")
    with pytest.raises(InputError, match=r"run.trec:2: qid 'q7' is not a training query"):
        read_file_pool(str(path), "trec", {"q1"}, CORPUS, subset=False)
    table, skipped = read_file_pool(str(path), "trec", {"q1"}, CORPUS, subset=True)
    assert table.num_rows == 1 and skipped == 1
    path.write_text("q1 Q0 d1 1 1.5 x\nq1 Q0 d2 1 x\n")
    with pytest.raises(InputError, match=r"run.trec:2: expected 6 fields"):
        read_file_pool(str(path), "trec", {"q1"}, CORPUS, subset=False)


def test_st_hard_negatives_file_pool(tmp_path):
    path = tmp_path / "hn.jsonl"
    lines = [
        {"qid": 1, "pos": ["d1"], "neg": {"bm25": ["d2", 3], "dense": ["d4", "d2"]}},
        {"qid": "q2", "pos": [], "neg": {"bm25": []}},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    corpus = pa.array(["d1", "d2", "3", "d4"])
    table, _ = read_file_pool(str(path), "st_hard_negatives", {"1", "q2"}, corpus, subset=False)
    assert [(r["qid"], r["pid"], r["rank"]) for r in table.to_pylist()] == [
        ("1", "d2", 1),
        ("1", "3", 2),
        ("1", "d4", 3),
    ]
    bad = {
        '{"qid": 1, "neg": {"bm25": ["d2"]}}\n{"qid": 2, "neg": \n': r"hn.jsonl:2: not valid JSON",
        '{"qid": 1, "neg": ["d2"]}\n': r"hn.jsonl:1: \"neg\" must map",
        '{"qid": 1}\n': r"hn.jsonl:1: expected keys",
        '{"qid": 1, "neg": {"s": ["d2"]}}\n{"qid": 1, "neg": {}}\n': r"hn.jsonl:2: qid '1' repeats",
        '\n{"qid": 1, "neg": {"s": ["d2", null]}}\n': r"hn.jsonl:2: pid must be",
        '{"qid": 1, "neg": {"s": ["d2"]}}\n{"qid": 2, "neg": {"s": ["zz"]}}\n': (
            r"hn.jsonl:2: pid 'zz' \(query '2'\) is not in the corpus"
        ),
    }
    for text, pattern in bad.items():
        path.write_text(text)
        with pytest.raises(InputError, match=pattern):
            read_file_pool(str(path), "st_hard_negatives", {"1", "2"}, corpus, subset=False)


def test_file_source_in_the_stage_combines_with_bm25(ray_session, demo_config, tmp_path):
    cfg = _config(demo_config, tmp_path / "prep")
    run = RunDir.open(cfg.run_dir)
    run_stage(stage_by_name("prepare"), cfg, run)
    qids = train_qids(run, cfg.data.splits.train)
    pids = corpus_pids(run).to_pylist()
    path = tmp_path / "hn.jsonl"
    path.write_text(
        "".join(
            json.dumps({"qid": q, "neg": {"s": pids[i : i + 5]}}) + "\n" for i, q in enumerate(qids)
        )
    )
    cfg = _config(
        demo_config,
        tmp_path / "prep",
        sources=["file", "bm25"],
        file_path=str(path),
        file_format="st_hard_negatives",
        depth=5,
    )
    run_stage(stage_by_name("mine"), cfg, run)
    _, positives, rows = _check_pool(run, cfg, _table(run, "pool"))
    first = [r for r in rows if r["qid"] == qids[0]]
    expected_file = [p for p in pids[:5] if p not in positives[qids[0]]]
    assert [r["pid"] for r in first if r["source"] == "file"] == expected_file
    assert {r["source"] for r in rows} == {"file", "bm25"}


def test_dense_pool_with_the_demo_student(ray_session, demo_config, demo_collection, tmp_path):
    cfg = _config(
        demo_config,
        tmp_path / "run",
        sources=["dense"],
        depth=10,
        dense={"model": str(demo_collection.student_dir), "max_length": 128},
        actors={"batch_size": 64},
    )
    run = _mine(cfg)
    qids, positives, rows = _check_pool(run, cfg, _table(run, "pool"))
    assert {r["source"] for r in rows} == {"dense"}
    for qid in qids:
        mine = [r for r in rows if r["qid"] == qid]
        assert len(mine) >= 10 - len(positives[qid])
        scores = [r["score"] for r in mine]
        assert scores == sorted(scores, reverse=True)
        # Normalised embeddings: inner products are cosines.
        assert all(-1.0001 <= s <= 1.0001 for s in scores)
