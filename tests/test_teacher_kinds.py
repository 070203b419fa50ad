"""Teacher kinds beyond the cross-encoder: BM25, bi-encoder, and weighted ensembles."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from raykd.teacher.bm25 import Bm25Scorer, CorpusStats, corpus_stats_from_parquet
from raykd.teacher.ensemble import combine, member_column
from raykd.teacher.normalize import normalize_per_query
from tests.score_helpers import make_examples, score_run, with_teacher

# "the", "on" are English stopwords; "a" is too short for the token regex.
TINY = ["the cat sat on the mat", "dogs chase the cat", "a bird sings"]
N, AVGDL = 3, 8 / 3
IDF_CAT = math.log(1 + (N - 2 + 0.5) / (2 + 0.5))
IDF_MAT = math.log(1 + (N - 1 + 0.5) / (1 + 0.5))


def _tf_part(tf: int, doc_len: int, k1: float = 1.2, b: float = 0.75) -> float:
    return tf / (tf + k1 * (1 - b + b * doc_len / AVGDL))


def test_bm25_matches_the_hand_formula():
    stats = CorpusStats(stopwords="en").add(TINY)
    assert (stats.n_docs, stats.total_len) == (3, 8)
    assert stats.df == {"cat": 2, "sat": 1, "mat": 1, "dogs": 1, "chase": 1, "bird": 1, "sings": 1}
    scorer = Bm25Scorer(stats, k1=1.2, b=0.75)
    got = scorer.score(["cat on mat"] * 3, TINY)
    want = [IDF_CAT * _tf_part(1, 3) + IDF_MAT * _tf_part(1, 3), IDF_CAT * _tf_part(1, 3), 0.0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32
    # A repeated query token counts twice (as in bm25s); one the corpus lacks counts nothing.
    assert scorer.score(["cat cat"], [TINY[1]])[0] == pytest.approx(2 * got[1], rel=1e-6)
    assert scorer.score(["zebra cat"], ["zebra cat"])[0] == pytest.approx(
        IDF_CAT * _tf_part(1, 2), rel=1e-6
    )


def test_bm25_scores_a_dark_text_outside_the_corpus():
    scorer = Bm25Scorer(CorpusStats(stopwords="en").add(TINY), k1=1.2, b=0.75)
    # A reinforced negative: its length (5 tokens, "sep" included) and term counts are its own.
    dark = "Cat cat mat [SEP] bird"
    want = IDF_CAT * _tf_part(2, 5) + IDF_MAT * _tf_part(1, 5)
    assert scorer.score(["cat on mat"], [dark])[0] == pytest.approx(want, rel=1e-6)
    assert scorer.score(["cat on mat"], ["[MASK] sat [MASK]"])[0] == 0.0


def test_corpus_stats_merge_and_pickle():
    whole = CorpusStats(stopwords="en", stemmer="english").add(TINY)
    parts = CorpusStats(stopwords="en", stemmer="english").add(TINY[:1])
    parts.merge(CorpusStats(stopwords="en", stemmer="english").add(TINY[1:]))
    assert (parts.n_docs, parts.total_len, parts.df) == (whole.n_docs, whole.total_len, whole.df)
    assert "sing" in whole.df  # stemmed
    again = pickle.loads(pickle.dumps(whole))
    assert again == whole and again.tokenizer()("Singing cats") == ["sing", "cat"]
    with pytest.raises(ValueError, match="different tokenisations"):
        whole.merge(CorpusStats(stopwords="en"))


@pytest.mark.parametrize("stemmer", [None, "english"])
def test_bm25_equals_bm25s_on_the_demo_corpus(prepared_run, stemmer):
    import bm25s
    import Stemmer

    from raykd.data.passages import passage_text

    corpus = pq.read_table(prepared_run.path("corpus"), filesystem=prepared_run.fs)
    texts = [
        passage_text(t, x)
        for t, x in zip(corpus["title"].to_pylist(), corpus["text"].to_pylist(), strict=True)
    ]
    queries = pq.read_table(prepared_run.path("queries/dev"), filesystem=prepared_run.fs)
    qtexts = queries["text"].to_pylist()[:10]
    stem = Stemmer.Stemmer(stemmer) if stemmer else None
    index = bm25s.BM25(k1=1.2, b=0.6, method="lucene")
    tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False)
    index.index(tokens, show_progress=False)
    q_tokens = bm25s.tokenize(qtexts, stopwords="en", stemmer=stem, show_progress=False)
    ids, scores = index.retrieve(q_tokens, k=20, show_progress=False)

    stats = corpus_stats_from_parquet(
        prepared_run.path("corpus"), prepared_run.fs, stopwords="en", stemmer=stemmer
    )
    scorer = Bm25Scorer(stats, k1=1.2, b=0.6)
    for i, q in enumerate(qtexts):
        got = scorer.score([q] * 20, [texts[j] for j in ids[i]])
        np.testing.assert_allclose(got, scores[i], atol=1e-4)


@pytest.mark.parametrize(
    ("pooling", "normalize", "similarity"),
    [("cls", False, "dot"), ("mean", False, "cosine"), ("mean", True, "dot")],
)
def test_bi_encoder_matches_text_encoder(demo_collection, pooling, normalize, similarity):
    from raykd.retrieval.encoder import TextEncoder
    from raykd.teacher.bi_encoder import BiEncoderScorer

    model = str(demo_collection.student_dir)
    queries = ["what causes rain", "what causes rain", "solar panels", "what causes rain"]
    texts = ["clouds release water", "the sun heats air", "photovoltaic cells", "clouds"]
    scorer = BiEncoderScorer(
        model,
        pooling=pooling,
        normalize=normalize,
        similarity=similarity,
        query_max_length=8,
        passage_max_length=16,
        device="cpu",
    )
    got = scorer.score(queries, texts)

    def enc(xs, max_length):
        encoder = TextEncoder(
            model, pooling=pooling, normalize=normalize, max_length=max_length, device="cpu"
        )
        return encoder.encode(xs).astype(np.float64)

    q, p = enc(queries, 8), enc(texts, 16)
    want = (q * p).sum(1)
    if similarity == "cosine":
        want /= np.linalg.norm(q, axis=1) * np.linalg.norm(p, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got.dtype == np.float32 and np.ptp(got) > 0


QIDS = np.array(["a", "b", "a", "b", "a"])
S1 = np.array([1.0, 5.0, 2.0, 5.0, 3.0])  # a: 1 2 3; b: constant
S2 = np.array([0.0, 1.0, 10.0, 3.0, 20.0])  # a: 0 10 20; b: 1 3


def test_combine_zscore_by_hand():
    z = 1 / math.sqrt(2 / 3)  # |1 - 2| / population std of (1, 2, 3)
    got = combine({"x": S1, "y": S2}, {"x": 0.3, "y": 0.7}, QIDS, "zscore")
    # a: both members give (-z, 0, z); b: x is constant (0), y gives (-1, 1).
    want = [-z, 0.7 * -1, 0.0, 0.7 * 1, z]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32
    np.testing.assert_allclose(combine({"x": S1, "y": S2}, [0.3, 0.7], QIDS), want, rtol=1e-6)


def test_combine_minmax_by_hand():
    got = combine({"x": S1, "y": S2}, {"x": 0.3, "y": 0.7}, QIDS, "minmax")
    np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 0.7, 1.0], rtol=1e-6, atol=1e-7)


def test_normalisation_statistics_exclude_dark_rows():
    """Adding dark examples must not move the original rows' targets: the statistics come from
    the reference rows (positives + pool negatives) and are applied to the dark rows."""
    qids = np.array(["a"] * 5 + ["b"] * 2)
    s = np.array([1.0, 2.0, 3.0, 2.5, 9.0, 4.0, 6.0])
    ref = np.array([True, True, True, False, False, False, False])  # b: no reference row
    # a: min 1, max 3 over the reference rows; the dark 2.5 -> 0.75 and 9 -> 4 (outside [0, 1]).
    got = normalize_per_query(s, qids, "minmax", ref)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.75, 4.0, 0.0, 1.0])
    # z: mean 2, population std sqrt(2/3) over a's reference rows; b over all its rows.
    z = np.sqrt(2 / 3)
    got = normalize_per_query(s, qids, "zscore", ref)
    np.testing.assert_allclose(got, [-1 / z, 0.0, 1 / z, 0.5 / z, 7 / z, -1.0, 1.0])
    # The reference rows' values equal those of a normalisation without the dark rows.
    alone = normalize_per_query(s[:3], qids[:3], "minmax")
    np.testing.assert_allclose(normalize_per_query(s, qids, "minmax", ref)[:3], alone)
    got = combine({"x": s, "y": 2 * s}, [0.3, 0.7], qids, "minmax", ref=ref)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.75, 4.0, 0.0, 1.0], rtol=1e-6)


def test_combine_and_normalize_reject_bad_input():
    with pytest.raises(ValueError, match="weights"):
        combine({"x": S1}, {"y": 1.0}, QIDS)
    with pytest.raises(ValueError, match="member 'x': non-finite"):
        combine({"x": np.array([1.0, np.nan, 0, 0, 0])}, [1.0], QIDS)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_per_query(S1, QIDS, "softmax")
    assert member_column(1, "bi_encoder") == "score_1_bi_encoder"


def test_ensemble_scores_dark_examples_through_the_score_stage(
    ray_session, demo_config, demo_collection, tmp_path
):
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name
    from raykd.stages.score import read_queries
    from raykd.teacher.bi_encoder import BiEncoderScorer

    base = tmp_path / "base"
    student = str(demo_collection.student_dir)
    members = [
        {"kind": "bm25", "weight": 0.3, "bm25": {"k1": 1.2}},
        {"kind": "bi_encoder", "weight": 0.5, "model": student, "max_length": 64},
        {"kind": "cross_encoder", "weight": 0.2, "model": str(demo_collection.teacher_dir)},
    ]
    cfg = with_teacher(
        demo_config.model_copy(update={"run_dir": str(base)}),
        kind="ensemble",
        members=members,
        shard_rows=30,
        actors={"torch_threads": 1},
    )
    prepared = RunDir.open(str(base))
    run_stage(stage_by_name("prepare"), cfg, prepared)
    examples = make_examples(prepared, cfg.data.splits.train, n_queries=6, n_neg=2)
    assert {"rein", "mask"} <= set(examples["kind"].to_pylist())
    cfg, run = score_run(base, tmp_path / "run", cfg, examples)

    assert run_stage(stage_by_name("score"), cfg, run)
    scores = pq.read_table(run.path("scores")).to_pandas()
    cols = ["score_0_bm25", "score_1_bi_encoder", "score_2_cross_encoder"]
    assert list(scores.columns) == ["qid", "eid", "kind", "score", *cols]
    assert len(scores) == examples.num_rows
    assert sorted(scores["eid"]) == sorted(examples["eid"].to_pylist())

    # Members' raw scores equal the scorers run in-process; score is their per-query combination.
    scores = scores.set_index("eid").loc[examples["eid"].to_pylist()]
    queries = read_queries(run, cfg.data.splits.train)
    q_texts = [queries[q] for q in examples["qid"].to_pylist()]
    texts = examples["text"].to_pylist()
    stats = corpus_stats_from_parquet(run.path("corpus"), run.fs, stopwords="en")
    np.testing.assert_allclose(
        scores["score_0_bm25"], Bm25Scorer(stats, k1=1.2).score(q_texts, texts), rtol=1e-5
    )
    bi = BiEncoderScorer(student, query_max_length=64, passage_max_length=64, device="cpu")
    np.testing.assert_allclose(
        scores["score_1_bi_encoder"], bi.score(q_texts, texts), rtol=1e-4, atol=1e-5
    )
    # Normalised with the statistics of the positives and pool negatives alone.
    want = combine(
        {c: scores[c].to_numpy() for c in cols},
        [0.3, 0.5, 0.2],
        scores["qid"].to_numpy(),
        ref=scores["kind"].isin(["pos", "neg"]).to_numpy(),
    )
    np.testing.assert_allclose(scores["score"], want, rtol=1e-5, atol=1e-5)
    dark = scores[scores["kind"].isin(["rein", "mask"])]
    assert len(dark) and np.isfinite(dark[cols].to_numpy()).all()
    assert run.read_json("manifests/score.json")["info"]["shards"] >= 2


def test_bi_encoder_cache_encodes_each_text_once_and_evicts_least_recent(demo_collection):
    from raykd.teacher.bi_encoder import BiEncoderScorer

    scorer = BiEncoderScorer(
        str(demo_collection.student_dir),
        query_max_length=8,
        passage_max_length=16,
        device="cpu",
        cache_size=3,
    )
    encoded: list[list[str]] = []
    real = scorer.encoder.encode

    def counting(texts, batch_size):
        encoded.append(list(texts))
        return real(texts, batch_size)

    scorer.encoder.encode = counting
    first = scorer.score(["rain", "rain"], ["clouds", "sun"])
    assert encoded == [["rain"], ["clouds", "sun"]]
    again = scorer.score(["rain"], ["clouds"])
    assert encoded[2:] == []
    np.testing.assert_allclose(again, first[:1], rtol=1e-6)
    # A text as a query and as a passage differ (two lengths): both are new here.
    scorer.score(["sun"], ["rain"])
    assert encoded[2:] == [["sun"], ["rain"]]
    # Capacity 3: (8, sun), (16, rain) and, touched last before them, (16, clouds) remain.
    assert list(scorer._cache) == [(16, "clouds"), (8, "sun"), (16, "rain")]
    scorer.score(["rain"], ["sun"])
    assert encoded[4:] == [["rain"], ["sun"]]


def test_ensemble_rerank_scores_every_pair_once_and_combines_per_query(
    ray_session, demo_config, demo_collection, prepared_run
):
    """The eval's teacher rerank: one pipeline over several blocks of pairs, each member's raw
    score equal to the scorer run in-process, combined per query over the whole run."""
    from raykd.evaluation.rerank import fetch_passages
    from raykd.on_ray.scoring import rerank_teacher
    from raykd.stages.score import read_queries
    from raykd.teacher.cross_encoder import CrossEncoderScorer
    from raykd.teacher.tokenize import load_tokenizer, tokenize_batch

    members = [
        {"kind": "bm25", "weight": 0.4, "bm25": {"k1": 1.2}},
        {"kind": "cross_encoder", "weight": 0.6, "model": str(demo_collection.teacher_dir)},
    ]
    cfg = with_teacher(
        demo_config, kind="ensemble", members=members, shard_rows=7, actors={"torch_threads": 1}
    )
    queries = read_queries(prepared_run, cfg.data.splits.train)
    qids = sorted(queries)[:5]
    pids = pq.read_table(prepared_run.path("corpus"), columns=["pid"])["pid"].to_pylist()
    first = {q: {p: 0.0 for p in pids[3 * i : 3 * i + 9]} for i, q in enumerate(qids)}
    passages = fetch_passages(prepared_run, {p for d in first.values() for p in d}, "test")

    run = rerank_teacher(first, queries, passages, cfg, prepared_run, source="test")
    assert {q: set(d) for q, d in run.items()} == {q: set(d) for q, d in first.items()}

    pairs = [(q, p) for q in qids for p in first[q]]
    q_texts = [queries[q] for q, _ in pairs]
    texts = [passages[p] for _, p in pairs]
    stats = corpus_stats_from_parquet(prepared_run.path("corpus"), prepared_run.fs)
    model = str(demo_collection.teacher_dir)
    n = len(pairs)
    batch = {"qid": ["q"] * n, "eid": [str(i) for i in range(n)], "kind": ["rerank"] * n}
    batch = {"query": q_texts, "text": texts, **batch}
    tokens = tokenize_batch(  # length-sorted: the eid column says which pair a score is
        {k: np.array(v, dtype=object) for k, v in batch.items()},
        tokenizer=model,
        max_query_length=cfg.teacher.max_query_length,
        max_passage_length=cfg.teacher.max_passage_length,
    )
    scored = CrossEncoderScorer(model, pad_id=load_tokenizer(model).pad_token_id)(tokens)
    ce = np.empty(n, dtype=np.float32)
    ce[scored["eid"].astype(int)] = scored["score"]
    raw = {"bm25": Bm25Scorer(stats, k1=1.2).score(q_texts, texts), "ce": ce}
    want = combine(raw, [0.4, 0.6], np.array([q for q, _ in pairs]))
    got = [run[q][p] for q, p in pairs]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
