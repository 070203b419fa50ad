import json
import random
import time
from pathlib import Path

import bm25s
import ir_measures
import pytest
from ir_measures import nDCG

from raykd.data.demo import DemoPaths, default_demo_dir, write_demo_collection

SMALL = dict(n_passages=400, n_train_queries=40, n_dev_queries=20)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoPaths:
    start = time.perf_counter()
    paths = write_demo_collection(tmp_path_factory.mktemp("demo") / "demo")
    print(f"\ndemo collection written in {time.perf_counter() - start:.2f}s")
    return paths


def _corpus(paths: DemoPaths) -> list[dict]:
    return [json.loads(line) for line in paths.corpus.read_text().splitlines()]


def _queries(paths: DemoPaths) -> dict[str, str]:
    return {q["_id"]: q["text"] for q in map(json.loads, paths.queries.read_text().splitlines())}


def _qrels(paths: DemoPaths, split: str) -> list[tuple[str, str, int]]:
    lines = (paths.qrels_dir / f"{split}.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    return [(q, p, int(r)) for q, p, r in (line.split("\t") for line in lines[1:])]


def _files(paths: DemoPaths) -> dict[str, bytes]:
    return {
        str(f.relative_to(paths.root)): f.read_bytes()
        for f in sorted(paths.root.rglob("*"))
        if f.is_file()
    }


def test_sizes_and_layout(demo):
    corpus = _corpus(demo)
    assert len(corpus) == 3000
    assert all(set(d) == {"_id", "title", "text"} and d["title"] and d["text"] for d in corpus)
    assert len({d["_id"] for d in corpus}) == 3000
    assert len(_queries(demo)) == 400
    train = {q for q, _, _ in _qrels(demo, "train")}
    dev = {q for q, _, _ in _qrels(demo, "dev")}
    assert len(train) == 300 and len(dev) == 100 and not train & dev
    text = " ".join(d["title"] + " " + d["text"] for d in corpus)
    assert text.isascii() and text == text.lower()


def test_every_query_has_a_positive_and_qrels_name_known_ids(demo):
    pids = {d["_id"] for d in _corpus(demo)}
    qids = set(_queries(demo))
    qrels = _qrels(demo, "train") + _qrels(demo, "dev")
    assert {q for q, _, _ in qrels} == qids
    assert {p for _, p, _ in qrels} <= pids
    assert {r for _, _, r in qrels} == {1, 2}
    assert {q for q, _, r in qrels if r == 2} == qids


def test_deterministic_per_seed(tmp_path):
    a = _files(write_demo_collection(tmp_path / "a", seed=7, **SMALL))
    b = _files(write_demo_collection(tmp_path / "b", seed=7, **SMALL))
    assert a.keys() == b.keys()
    # Everything, model weights and tokenizer included, is byte-identical.
    assert a == b
    c = _files(write_demo_collection(tmp_path / "c", seed=8, **SMALL))
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/dev.tsv"):
        assert a[name] != c[name]
    assert a["student/model.safetensors"] != c["student/model.safetensors"]


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    paths = write_demo_collection(tmp_path / "d", **SMALL)
    stamp = paths.root / "demo.json"
    first = stamp.stat().st_mtime_ns
    assert write_demo_collection(tmp_path / "d", **SMALL) == paths
    assert stamp.stat().st_mtime_ns == first
    write_demo_collection(tmp_path / "d", seed=1, **SMALL)
    assert json.loads(stamp.read_text())["seed"] == 1
    # No temporary or stale directories are left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_demo_collection(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_default_demo_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYKD_CACHE", str(tmp_path))
    assert default_demo_dir() == tmp_path / "demo"
    monkeypatch.delenv("RAYKD_CACHE")
    assert default_demo_dir() == Path.home() / ".cache" / "raykd" / "demo"


def test_tokenizer_round_trip(demo):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo.tokenizer_dir)
    assert tok.is_fast and type(tok).__name__ == "BertTokenizer"
    assert tok.sep_token == "[SEP]" and tok.mask_token == "[MASK]"
    assert tok.cls_token == "[CLS]" and tok.pad_token == "[PAD]" and tok.unk_token == "[UNK]"
    assert tok.convert_tokens_to_ids("[SEP]") == tok.sep_token_id
    assert tok.convert_tokens_to_ids("[MASK]") == tok.mask_token_id
    assert 2000 <= len(tok) <= 4000

    doc = _corpus(demo)[0]
    enc = tok(doc["title"], doc["text"] + " [MASK]")
    ids = enc["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids.count(tok.sep_token_id) == 2 and tok.mask_token_id in ids
    assert tok.unk_token_id not in ids
    assert set(enc["token_type_ids"]) == {0, 1}
    # Lowercasing is part of the tokenizer.
    assert tok(doc["title"].upper())["input_ids"] == tok(doc["title"])["input_ids"]
    # Every model dir carries the same tokenizer.
    for model_dir in (demo.teacher_dir, demo.student_dir):
        assert AutoTokenizer.from_pretrained(model_dir).get_vocab() == tok.get_vocab()


def test_passages_fit_the_model(demo):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo.tokenizer_dir)
    corpus = _corpus(demo)
    lengths = [len(ids) for ids in tok([d["text"] for d in corpus])["input_ids"]]
    assert max(lengths) <= 128


def test_models_load_offline(demo):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo.tokenizer_dir)
    student = AutoModel.from_pretrained(demo.student_dir).eval()
    teacher = AutoModelForSequenceClassification.from_pretrained(demo.teacher_dir).eval()
    assert type(student).__name__ == "BertModel"
    assert teacher.config.num_labels == 1
    for model in (student, teacher):
        assert model.config.vocab_size == len(tok)
        assert model.config.max_position_embeddings >= tok.model_max_length
    batch = tok(
        ["a query", "another one"], ["some passage", "more"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert teacher(**batch).logits.shape == (2, 1)
        assert student(**batch).last_hidden_state.shape[-1] == student.config.hidden_size


def _ndcg10(qrels: list[tuple[str, str, int]], run: list[ir_measures.ScoredDoc]) -> float:
    qrels = [ir_measures.Qrel(q, p, r) for q, p, r in qrels]
    return ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]


def test_bm25_beats_random(demo):
    corpus = _corpus(demo)
    queries = _queries(demo)
    qrels = _qrels(demo, "dev")
    dev = sorted({q for q, _, _ in qrels})

    retriever = bm25s.BM25()
    docs = [f"{d['title']} {d['text']}" for d in corpus]
    retriever.index(bm25s.tokenize(docs, stopwords=None, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([queries[q] for q in dev], stopwords=None, show_progress=False)
    hits, scores = retriever.retrieve(tokens, k=100, show_progress=False)
    run = [
        ir_measures.ScoredDoc(q, corpus[int(i)]["_id"], float(s))
        for q, row, row_scores in zip(dev, hits, scores, strict=True)
        for i, s in zip(row, row_scores, strict=True)
    ]
    bm25 = _ndcg10(qrels, run)

    rng = random.Random(0)
    random_run = [
        ir_measures.ScoredDoc(q, d["_id"], rng.random())
        for q in dev
        for d in rng.sample(corpus, 100)
    ]
    baseline = _ndcg10(qrels, random_run)

    # Synonyms never occur in passages: they are the lexical mismatch BM25 cannot bridge.
    vocabulary = {w for doc in docs for w in doc.split()}
    mismatched = sum(any(w not in vocabulary for w in queries[q].split()) for q in dev)
    print(
        f"\nBM25 dev nDCG@10 {bm25:.3f}, random {baseline:.3f}, mismatched {mismatched}/{len(dev)}"
    )
    assert bm25 > 0.3 and bm25 > 5 * baseline
    assert mismatched > 0
