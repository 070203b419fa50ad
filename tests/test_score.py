"""The score stage: tokenisation, the cross-encoder scorer, checks, and a full stage run."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.data.schemas import SCORES
from raykd.errors import InputError, StageError
from raykd.teacher.cross_encoder import CrossEncoderScorer, head_scores
from raykd.teacher.rows import attach_queries, check_scores, shard_of
from raykd.teacher.tokenize import encode_pairs, load_tokenizer, pad, tokenize_batch
from tests.score_helpers import make_examples, score_run, with_teacher

Q = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
P = " ".join(["lorem ipsum dolor sit amet"] * 20)


@pytest.fixture(scope="module")
def tok(demo_collection):
    return load_tokenizer(str(demo_collection.teacher_dir))


def test_separate_truncation_builds_cls_q_sep_p_sep(tok):
    ids, types = encode_pairs(tok, [Q], [P], max_query_length=4, max_passage_length=10)
    q = tok(Q, add_special_tokens=False)["input_ids"][:4]
    p = tok(P, add_special_tokens=False)["input_ids"][:10]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert ids[0] == [cls, *q, sep, *p, sep]
    assert types[0] == [0] * (len(q) + 2) + [1] * (len(p) + 1)


def test_joint_truncation_is_the_tokenizers_pair_truncation(tok):
    ids, types = encode_pairs(tok, [Q, "short"], [P, "tiny"], None, 24)
    ref = tok([Q, "short"], [P, "tiny"], truncation=True, max_length=24)
    assert ids == ref["input_ids"] and types == ref["token_type_ids"]
    assert len(ids[0]) == 24


def test_tokenize_batch_sorts_by_length_and_keeps_keys(tok, demo_collection):
    texts = ["a b c d e f g h", "a", "a b c d"]
    batch = {
        "qid": np.array(["q1", "q2", "q3"], dtype=object),
        "eid": np.array(["e1", "e2", "e3"], dtype=object),
        "kind": np.array(["pos", "neg", "neg"], dtype=object),
        "query": np.array(["x y"] * 3, dtype=object),
        "text": np.array(texts, dtype=object),
    }
    out = tokenize_batch(
        batch, tokenizer=str(demo_collection.teacher_dir), max_query_length=32,
        max_passage_length=128,
    )  # fmt: skip
    lengths = [len(x) for x in out["input_ids"]]
    assert lengths == sorted(lengths)
    assert list(out["eid"]) == ["e2", "e3", "e1"] and list(out["qid"]) == ["q2", "q3", "q1"]


def test_pad_masks_the_padding():
    ids, mask = pad([np.array([5, 6, 7]), np.array([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_head_scores():
    assert head_scores(np.array([[1.5], [-2.0]])).tolist() == [1.5, -2.0]
    np.testing.assert_allclose(head_scores(np.array([[1.0, 3.5], [2.0, -1.0]])), [2.5, -3.0])
    with pytest.raises(ValueError, match="1 or 2 logits"):
        head_scores(np.zeros((2, 3)))


def test_shard_of_is_stable_and_in_range():
    qids = [f"q{i}" for i in range(500)]
    shards = shard_of(qids, 7)
    assert shards.min() >= 0 and shards.max() < 7 and len(set(shards.tolist())) == 7
    # crc32 is fixed: the same qid maps to the same shard in every process and run.
    assert shard_of(["q0", "query-42"], 7).tolist() == [
        zlib.crc32(b"q0") % 7,
        zlib.crc32(b"query-42") % 7,
    ]


def test_check_scores_names_non_finite_and_duplicate_rows():
    table = pa.table(
        {"qid": ["a", "a", "b"], "eid": ["1", "2", "3"], "kind": ["pos"] * 3,
         "score": np.array([0.1, np.nan, 0.3], dtype=np.float32)},
        schema=SCORES,
    )  # fmt: skip
    with pytest.raises(StageError, match="qid 'a' eid '2'"):
        check_scores(table)
    inf = table.set_column(3, "score", pa.array([0.1, 0.2, np.inf], type=pa.float32()))
    with pytest.raises(StageError, match="qid 'b' eid '3'"):
        check_scores(inf)
    dup = pa.table(
        {"qid": ["a", "a"], "eid": ["1", "1"], "kind": ["pos"] * 2,
         "score": np.array([0.1, 0.2], dtype=np.float32)},
        schema=SCORES,
    )  # fmt: skip
    with pytest.raises(StageError, match="eid '1' 2 times"):
        check_scores(dup)


def test_attach_queries_rejects_unknown_qid():
    batch = {k: np.array(["q9"], dtype=object) for k in ("qid", "eid", "kind", "text")}
    with pytest.raises(InputError, match="qid 'q9'"):
        attach_queries(batch, queries={"q1": "x"}, source="run/examples")


def test_scorer_batches_match_one_pair_at_a_time(demo_collection, tok):
    """Padding and length-sorting must not change any score, nor attach it to another row."""
    model = str(demo_collection.teacher_dir)
    texts = [P[: 7 * (i + 1)] for i in range(12)]
    batch = {
        "qid": np.array([f"q{i % 3}" for i in range(12)], dtype=object),
        "eid": np.array([f"e{i}" for i in range(12)], dtype=object),
        "kind": np.array(["neg"] * 12, dtype=object),
        "query": np.array([Q[: 5 + i] for i in range(12)], dtype=object),
        "text": np.array(texts[::-1], dtype=object),
    }
    tokens = tokenize_batch(batch, tokenizer=model, max_query_length=32, max_passage_length=128)
    scorer = CrossEncoderScorer(model, pad_id=tok.pad_token_id, torch_threads=1)
    batched = scorer(tokens)
    for i in range(12):
        one = scorer({k: v[i : i + 1] for k, v in tokens.items()})
        assert one["eid"][0] == batched["eid"][i]
        assert abs(one["score"][0] - batched["score"][i]) < 1e-5
    assert batched["score"].dtype == np.float32
    assert np.ptp(batched["score"]) > 0  # distinct inputs, distinct scores


def test_score_stage_scores_every_example_once(ray_session, demo_config, tmp_path):
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name
    from raykd.stages.score import read_queries

    base = tmp_path / "base"
    cfg = with_teacher(
        demo_config.model_copy(update={"run_dir": str(base)}),
        shard_rows=40,
        actors={"torch_threads": 1},
    )
    prepared = RunDir.open(str(base))
    run_stage(stage_by_name("prepare"), cfg, prepared)
    examples = make_examples(prepared, cfg.data.splits.train, n_queries=8, n_neg=3)
    cfg, run = score_run(base, tmp_path / "run", cfg, examples)

    assert run_stage(stage_by_name("score"), cfg, run)
    scores = pq.read_table(run.path("scores"))
    assert scores.schema.equals(SCORES)
    assert scores.num_rows == examples.num_rows
    got = dict(zip(scores["eid"].to_pylist(), scores["score"].to_pylist(), strict=True))
    assert sorted(got) == sorted(examples["eid"].to_pylist())
    key_of = {r["eid"]: (r["qid"], r["kind"]) for r in examples.to_pylist()}
    assert all(key_of[r["eid"]] == (r["qid"], r["kind"]) for r in scores.to_pylist())

    # The same pairs scored in-process, one at a time: same numbers, same rows.
    queries = read_queries(run, cfg.data.splits.train)
    model = cfg.teacher.model
    scorer = CrossEncoderScorer(model, pad_id=load_tokenizer(model).pad_token_id, torch_threads=1)
    for row in examples.slice(0, 10).to_pylist():
        batch = {k: np.array([row[k]], dtype=object) for k in ("qid", "eid", "kind", "text")}
        batch["query"] = np.array([queries[row["qid"]]], dtype=object)
        tokens = tokenize_batch(batch, tokenizer=model, max_query_length=32, max_passage_length=128)
        assert abs(scorer(tokens)["score"][0] - got[row["eid"]]) < 1e-5

    info = run.read_json("manifests/score.json")["info"]
    assert info["pairs_scored"] == examples.num_rows and info["pairs_per_s"] > 0
    assert info["shards"] >= 2 and info["shards_resumed"] == 0
    assert not (tmp_path / "run" / ".partial").exists()
    assert not (tmp_path / "run" / ".staging").exists()


def test_shard_collector_hands_back_each_shard_when_whole():
    from raykd.teacher.rows import ShardCollector

    qids = [f"q{i}" for i in range(40)]
    shards = shard_of(qids, 3).tolist()
    zero = [q for q, k in zip(qids, shards, strict=True) if k == 0][:2]
    one = [q for q, k in zip(qids, shards, strict=True) if k == 1][:1]

    def rows(qs):
        return pa.table({"qid": qs, "eid": [f"{q}/e" for q in qs], "score": [1.0] * len(qs)})

    c = ShardCollector({0: 3, 1: 1}, 3)
    # Shard 0's three rows come in two batches, around shard 1's one.
    assert c.add(rows([zero[0], zero[1]])) == []
    done = c.add(rows([one[0], zero[0]]))
    assert [(k, t["qid"].to_pylist()) for k, t in done] == [
        (0, [zero[0], zero[1], zero[0]]),
        (1, [one[0]]),
    ]
    c.finish()

    short = ShardCollector({0: 3, 1: 1}, 3)
    short.add(rows([zero[0]]))
    with pytest.raises(
        StageError, match=r"shard 0: teacher returned 1 rows for 3 \(2 shards short\)"
    ):
        short.finish()
    over = ShardCollector({1: 1}, 3)
    with pytest.raises(StageError, match="shard 1: teacher returned 2 rows for 1"):
        over.add(rows([one[0], one[0]]))
    with pytest.raises(StageError, match="rows of shard 0, which was not scored"):
        ShardCollector({1: 1}, 3).add(rows([zero[0]]))
