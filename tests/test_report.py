"""The report stage on a small synthetic run dir, and the sampling/table pieces behind it."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raykd.candidates.confidence import confidence
from raykd.candidates.pool import QueryPool
from raykd.config import validate
from raykd.data.schemas import SCORES, TRAIN
from raykd.errors import InputError
from raykd.report.figures import self_paced_cuts
from raykd.report.results import EvalRun, find_eval_runs, systems_of, table_rows
from raykd.report.sampling import Reservoir, sample_scores, sample_train
from raykd.run_dir import RunDir
from raykd.stages import report as report_stage
from raykd.stages.pipeline import run_stage, stage_by_name
from raykd.student.selfpaced import keep_count
from tests.conftest import pick

N_QUERIES = 30
N_NEG, N_REIN, N_MASK = 40, 8, 3
M = 5
EPOCHS = 3
STRATEGIES = ("topk", "stratified", "dark")
DATA_HASH = "sha256:5f1e2d9c0ab4"


def _scores_table(rng: np.random.Generator) -> pa.Table:
    rows: dict[str, list] = {"qid": [], "eid": [], "kind": [], "score": []}
    for q in range(N_QUERIES):
        qid = f"q{q:03d}"
        n_pos = 2 if q % 10 == 0 else 1
        for kind, n, mu, sd in (
            ("pos", n_pos, 6.0, 1.0),
            ("neg", N_NEG, -2.0, 2.0),
            ("rein", N_REIN, 2.0, 1.0),
            ("mask", N_MASK, 4.0, 1.0),
        ):
            for i in range(n):
                rows["qid"].append(qid)
                rows["eid"].append(f"{qid}-{kind}-{i:03d}")
                rows["kind"].append(kind)
                rows["score"].append(float(rng.normal(mu, sd)))
    return pa.table(rows, schema=SCORES)


def _train_table(scores: pa.Table, strategy: str) -> pa.Table:
    out: dict[str, list] = {n: [] for n in TRAIN.names}
    for qid in sorted(set(scores.column("qid").to_pylist())):
        t = scores.filter(pa.compute.equal(scores.column("qid"), qid))
        kinds = np.array(t.column("kind").to_pylist(), dtype=object)
        eids = np.array(t.column("eid").to_pylist(), dtype=object)
        vals = t.column("score").to_numpy().astype(np.float64)
        order = np.r_[np.flatnonzero(kinds == "pos")[:1], np.flatnonzero(kinds != "pos")]
        parents = [
            e.replace("-rein-", "-neg-") if k == "rein" else ""
            for e, k in zip(eids[order], kinds[order], strict=True)
        ]
        pool = QueryPool(
            ids=eids[order].tolist(),
            scores=vals[order],
            kinds=kinds[order].tolist(),
            parents=parents,
            qid=qid,
        )
        picked = pick(pool, strategy, M, n_strata=3, n_masked=2, seed=0)
        negs = picked[pool.kinds[picked] == "neg"]
        out["qid"].append(qid)
        out["query"].append(f"query {qid}")
        out["pos"].append("positive text")
        out["cands"].append([f"cand {i}" for i in picked])
        out["teacher"].append([float(pool.scores[0])] + pool.scores[picked].tolist())
        out["kinds"].append(["pos"] + pool.kinds[picked].tolist())
        out["confidence"].append(float(confidence(pool.scores[0], pool.scores[negs])))
    return pa.table(out, schema=TRAIN)


def _systems(rr: float, ndcg: float, r100: float) -> dict[str, float]:
    return {"RR@10": rr, "nDCG@10": ndcg, "R@100": r100}


def _metrics(systems: dict[str, dict[str, float]]) -> dict:
    """As the eval stage writes it: systems and measures, plus non-metric fields."""
    return {
        "split": "dev",
        "systems": list(systems),
        "measures": ["RR@10", "nDCG@10", "R@100"],
        "n_queries": 20,
        "n_judged": 12,
        "wall_time_s": {s: 1.0 for s in systems},
        "settings": {"depth": 100},
        **systems,
    }


def _manifest(stage: str, config: dict, rows: dict, **extra) -> dict:
    return {
        "stage": stage,
        "fingerprint": f"{stage}-fp-0123456789",
        "inputs": {"config": config, "upstream": {}, **extra},
        "rows": rows,
        "info": {},
        "wall_time_s": 1.5,
        "packages": {"raykd": "0.1.0", "pyarrow": "26.0.0"},
        "finished_at": "2026-11-23T17:00:00+0000",
    }


def _write_nested_eval(run: RunDir, rel: str, strategy: str, seed: int, ndcg: float) -> None:
    cfg = {
        "candidates": {"strategy": strategy, "m": M, "seed": seed},
        "train": {"epochs": EPOCHS, "seed": seed},
        "student": {"model": "demo:student"},
    }
    run.write_json(f"{rel}/manifests/train.json", _manifest("train", cfg, {"student": 1}))
    run.write_json(f"{rel}/metrics.json", _metrics({"student": _systems(ndcg - 0.1, ndcg, 0.9)}))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> RunDir:
    """scores/ (2 files), train/{topk,stratified,dark}/, metrics and manifests, as the stages
    would leave them; two nested seed runs of topk and one of stratified."""
    run = RunDir.open(str(tmp_path_factory.mktemp("report") / "run"))
    rng = np.random.default_rng(0)
    scores = _scores_table(rng)
    Path(run.path("scores")).mkdir(parents=True)
    # As the score stage writes them: shards by qid, each query's rows in one file.
    first = pc.is_in(scores["qid"], pa.array(sorted(set(scores["qid"].to_pylist()))[::2]))
    pq.write_table(scores.filter(first), run.path("scores/part-00000.parquet"))
    pq.write_table(scores.filter(pc.invert(first)), run.path("scores/part-00001.parquet"))
    for strategy in STRATEGIES:
        Path(run.path(f"train/{strategy}")).mkdir(parents=True)
        pq.write_table(
            _train_table(scores, strategy), run.path(f"train/{strategy}/part-00000.parquet")
        )
    model_cfg = {"teacher": {"kind": "cross_encoder", "model": "/models/teacher-ce"}}
    run.write_json(
        "manifests/prepare.json",
        _manifest(
            "prepare",
            {"data": {"format": "beir"}},
            {"corpus": 100},
            files={"corpus.jsonl": DATA_HASH},
        ),
    )
    run.write_json("manifests/score.json", _manifest("score", model_cfg, {"scores": 1}))
    run.write_json("manifests/eval.json", _manifest("eval", {"eval": {"depth": 100}}, {}))
    run.write_json(
        "metrics.json",
        {
            "bm25": _systems(0.31, 0.35, 0.7),
            "init": _systems(0.28, 0.30, 0.6),
            "teacher_rerank": _systems(0.52, 0.55, 0.7),
        },
    )
    _write_nested_eval(run, "bench/topk-s0", "topk", 0, 0.41)
    _write_nested_eval(run, "bench/topk-s1", "topk", 1, 0.45)
    _write_nested_eval(run, "bench/stratified-s0", "stratified", 0, 0.47)
    return run


def test_report_stage_writes_figures_table_and_provenance(synthetic_run):
    cfg = validate({"run_dir": synthetic_run.uri})
    assert run_stage(stage_by_name("report"), cfg, synthetic_run)
    out = Path(synthetic_run.path("report"))
    html = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 3
    assert sorted(re.findall(r'<img src="([^"]+)"', html)) == pngs
    for name in pngs:
        assert (out / name).stat().st_size > 20_000, name
        img = mpimg.imread(out / name)
        assert img.shape[0] > 300 and img.shape[1] > 400
        assert img[..., :3].std() > 0.05, f"{name} looks blank"
    # Effectiveness: two topk seeds averaged, stratified alone, the three baselines.
    assert "0.4300 ± 0.0283" in html  # nDCG@10 of topk, mean ± sample std of 0.41 and 0.45
    assert "split dev (12 judged queries)" in html
    assert "0.4700" in html and "0.5500" in html and "0.3500" in html
    for label in ("BM25", "init (student before training)", "teacher (reranking)"):
        assert label in html
    # Provenance: the data hash, the model, each stage's config and the package versions.
    assert DATA_HASH in html and "/models/teacher-ce" in html
    assert "teacher.model" in html and "26.0.0" in html
    assert "<td>bench/topk-s1</td><td>train</td>" in html  # nested runs' manifests too
    # Captions state the samples and the self-paced illustration over T = train.epochs.
    assert "at most 200,000 rows per kind" in html
    assert "as an illustration" in html
    manifest = synthetic_run.read_json("manifests/report.json")
    assert manifest["info"] == {"figures": 3, "strategies": 3, "evaluations": 4}


def test_report_needs_scores(tmp_path):
    run = RunDir.open(str(tmp_path / "empty"))
    with pytest.raises(Exception, match="scores/"):
        report_stage.write_report(run, tmp_path / "out")


def test_train_epochs_from_nested_manifest(synthetic_run):
    assert report_stage.train_epochs(synthetic_run, default=1) == EPOCHS
    assert set(report_stage.train_sets(synthetic_run)) == set(STRATEGIES)


def test_sample_scores_exact_totals_and_per_positive_pools(synthetic_run):
    s = sample_scores(synthetic_run, per_kind=50, n_queries=10, seed=0)
    n_pos = N_QUERIES + N_QUERIES // 10
    assert s.totals == {
        "pos": n_pos,
        "neg": N_QUERIES * N_NEG,
        "rein": N_QUERIES * N_REIN,
        "mask": N_QUERIES * N_MASK,
    }
    assert {k: v.size for k, v in s.scores.items()} == {
        "pos": min(50, n_pos),
        "neg": 50,
        "rein": 50,
        "mask": 50,
    }
    assert s.n_queries == 10 and s.total_queries == N_QUERIES
    assert all(p.size == 1 + N_NEG for p in s.pools)
    assert len(s.pools) >= 10
    np.testing.assert_allclose(
        s.pool_confidence, [confidence(p[0], p[1:]) for p in s.pools], rtol=1e-12
    )
    again = sample_scores(synthetic_run, per_kind=50, n_queries=10, seed=0)
    np.testing.assert_array_equal(again.scores["neg"], s.scores["neg"])


def test_bottom_k_keeps_the_k_smallest_distinct_keys():
    from raykd.report.sampling import BottomK

    rng = np.random.default_rng(3)
    keys = {f"q{i}": float(k) for i, k in enumerate(rng.random(200))}
    b = BottomK(5)
    for q in [*keys, *list(keys)[:50]]:  # a repeated item counts once
        b.add(keys[q], q)
    assert b.items() == sorted(keys, key=keys.__getitem__)[:5]
    small = BottomK(3)
    for q, k in [("a", 0.5), ("b", 0.1), ("a", 0.5)]:
        small.add(k, q)
    assert small.items() == ["b", "a"]
    assert BottomK(0).items() == []


def test_sample_scores_rejects_unknown_kind(tmp_path):
    run = RunDir.open(str(tmp_path / "bad"))
    Path(run.path("scores")).mkdir(parents=True)
    table = pa.table({"qid": ["q"], "eid": ["e"], "kind": ["weird"], "score": [1.0]}, schema=SCORES)
    pq.write_table(table, run.path("scores/part-0.parquet"))
    with pytest.raises(InputError, match="weird"):
        sample_scores(run, per_kind=10, n_queries=5)


def test_sample_train_caps_rows(synthetic_run):
    t = sample_train(synthetic_run, "train/topk", rows=7, seed=1)
    assert t.strategy == "topk" and t.total_rows == N_QUERIES
    assert len(t.teacher) == 7 and t.confidence.shape == (7,)
    assert all(
        k[0] == "pos" and len(k) == len(v) == 1 + M for k, v in zip(t.kinds, t.teacher, strict=True)
    )


def test_reservoir_is_uniform():
    counts = np.zeros(100)
    for seed in range(400):
        r = Reservoir(10, np.random.default_rng(seed))
        for lo in range(0, 100, 7):  # uneven batches
            r.add(pa.table({"x": np.arange(lo, min(lo + 7, 100))}))
        x = r.table(pa.schema([("x", pa.int64())])).column("x").to_numpy()
        assert len(set(x.tolist())) == 10 and r.seen == 100
        counts[x] += 1
    # Each item is drawn with probability 0.1: 40 expected of 400, sd ~ 6.
    assert counts.min() > 15 and counts.max() < 70


def test_self_paced_cuts_match_keep_count():
    conf = -np.random.default_rng(0).exponential(size=1001)
    for t, cut in enumerate(self_paced_cuts(conf, EPOCHS), start=1):
        kept = int((conf >= cut).sum())
        assert abs(kept - keep_count(conf.size, t, EPOCHS)) <= 1


def test_table_groups_seeds_and_splits_configs():
    def run(rel, strategy, lr, ndcg):
        return EvalRun(
            rel=rel,
            metrics={"student": {"nDCG@10": ndcg}, "bm25": {"nDCG@10": 0.3}},
            strategy=strategy,
            config={"train": {"lr": lr}},
        )

    rows = table_rows(
        [run("a", "dark", 1e-5, 0.4), run("b", "dark", 1e-5, 0.6), run("c", "dark", 2e-5, 0.5)]
    )
    assert [r.label for r in rows] == ["dark [a]", "dark [c]", "BM25"]
    assert rows[0].cell("nDCG@10") == "0.5000 ± 0.1414"
    assert rows[2].cell("nDCG@10") == "0.3000 ± 0.0000" and rows[2].runs == ["a", "b", "c"]


def test_systems_of_rejects_non_metrics():
    with pytest.raises(InputError, match="metrics.json"):
        systems_of({"note": "x"}, "metrics.json")
    with pytest.raises(InputError, match="'init' has no measures"):
        systems_of({"systems": ["init"]}, "metrics.json")
    real = {"systems": ["bm25"], "bm25": {"RR@10": 1}, "wall_time_s": {"bm25": 2.0}}
    assert systems_of(real, "m") == {"bm25": {"RR@10": 1.0}}


def test_find_eval_runs_skips_artifact_folders(synthetic_run):
    rels = sorted(r.rel for r in find_eval_runs(synthetic_run))
    assert rels == ["", "bench/stratified-s0", "bench/topk-s0", "bench/topk-s1"]
