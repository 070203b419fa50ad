"""prepare: ingest formats, and every bad-input case with its file and line."""

import json

import pyarrow.dataset as pads
import pytest

from raykd.config import validate
from raykd.data.readers import read_qrels, read_queries
from raykd.errors import InputError
from raykd.on_ray.corpus_source import CorpusSource
from raykd.run_dir import RunDir
from raykd.stages.pipeline import is_current, run_stage, stage_by_name

PREPARE = stage_by_name("prepare")
CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "alpha beta"},
    {"_id": "d2", "title": "", "text": "gamma delta"},
    {"_id": "d3", "text": "epsilon"},
]
QUERIES = [{"_id": "q1", "text": "alpha?"}, {"_id": "q2", "text": "gamma?"}]


def beir(tmp_path, corpus=None, queries=None, train=None, dev=None):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    jsonl = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)  # noqa: E731
    (root / "corpus.jsonl").write_text(corpus if corpus is not None else jsonl(CORPUS))
    (root / "queries.jsonl").write_text(queries if queries is not None else jsonl(QUERIES))
    head = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "train.tsv").write_text(train if train is not None else head + "q1\td1\t1\n")
    (root / "qrels" / "dev.tsv").write_text(dev if dev is not None else head + "q2\td2\t2\n")
    return root


def config(root, run_dir, fmt="beir", **data):
    return validate({"run_dir": str(run_dir), "data": {"format": fmt, "path": str(root), **data}})


def prepare(cfg):
    run = RunDir.open(cfg.run_dir)
    run_stage(PREPARE, cfg, run)
    return run


def table(run, rel):
    return pads.dataset(run.path(rel), filesystem=run.fs).to_table().to_pylist()


def corpus_rows(path, fmt="beir"):
    src = CorpusSource(str(path), fmt)
    with open(path, "rb") as f:
        return [r for block in src._read_stream(f, str(path)) for r in block.to_pylist()]


def test_beir_prepare_writes_schemas_and_skips_when_current(ray_session, tmp_path):
    cfg = config(beir(tmp_path), tmp_path / "run")
    run = prepare(cfg)
    assert sorted(r["pid"] for r in table(run, "corpus")) == ["d1", "d2", "d3"]
    assert {r["pid"]: r["title"] for r in table(run, "corpus")}["d3"] == ""
    assert table(run, "queries/train") == [{"qid": "q1", "text": "alpha?"}]
    assert table(run, "qrels/dev") == [{"qid": "q2", "pid": "d2", "rel": 2}]
    manifest = run.read_json("manifests/prepare.json")
    assert manifest["rows"]["corpus"] == 3
    assert set(manifest["inputs"]["files"]) == {
        str(tmp_path / "beir" / f)
        for f in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/dev.tsv")
    }
    assert "ray" in manifest["packages"]
    assert is_current(PREPARE, cfg, run)
    assert run_stage(PREPARE, cfg, run) is False
    # A changed input file changes the fingerprint.
    (tmp_path / "beir" / "qrels" / "dev.tsv").write_text("q2\td3\t1\n")
    assert not is_current(PREPARE, cfg, run)


def test_msmarco_and_parquet_formats(ray_session, tmp_path):
    ms = tmp_path / "ms"
    ms.mkdir()
    (ms / "collection.tsv").write_text("0\tzero text\n1\tone text\n")
    for split, line in (("train", "10\t0\t0\t1\n"), ("dev", "11\t0\t1\t1\n")):
        (ms / f"queries.{split}.tsv").write_text("10\tq ten\n11\tq eleven\n12\tunjudged\n")
        (ms / f"qrels.{split}.tsv").write_text(line)
    run = prepare(config(ms, tmp_path / "run_ms", fmt="msmarco"))
    assert table(run, "queries/dev") == [{"qid": "11", "text": "q eleven"}]
    assert run.read_json("manifests/prepare.json")["rows"]["corpus"] == 2
    # The run directory's own layout is the Parquet input format.
    run2 = prepare(config(run.root, tmp_path / "run_pq", fmt="parquet"))
    assert sorted(r["pid"] for r in table(run2, "corpus")) == ["0", "1"]
    assert table(run2, "qrels/train") == [{"qid": "10", "pid": "0", "rel": 1}]


def test_crlf_and_bom_are_accepted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"_id": "a", "text": "x"}\r\n{"_id": "b", "text": "y"}\r\n')
    assert [r["pid"] for r in corpus_rows(path)] == ["a", "b"]
    q = tmp_path / "q.tsv"
    q.write_bytes(b"\xef\xbb\xbf1\tfirst\r\n2\tsecond\r\n")
    assert read_queries(str(q), "msmarco") == {"1": "first", "2": "second"}


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', "beir", r":2: bad JSON"),
        (b'{"_id": "a", "text": "x"}\n{"text": "y"}\n', "beir", r":2: missing '_id'"),
        (b'{"_id": "a", "text": "x"}\n{"_id": "b"}\n', "beir", r":2: missing 'text'"),
        (b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "  "}\n', "beir", r":2: empty text"),
        (b"1\tone\n2\ttwo\tthree\n", "msmarco", r":2: expected 2 tab-separated fields"),
        (b"1\tone\n2\t\n", "msmarco", r":2: empty text"),
        (
            b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "\xff"}\n',
            "beir",
            r":2: not valid UTF-8",
        ),
        (
            b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n',
            "beir",
            r":3: duplicate pid \(first at line 1\)",
        ),
        (b"\n\n", "beir", "file has no records"),
    ],
)
def test_corpus_bad_input(tmp_path, content, fmt, message):
    path = tmp_path / "corpus.data"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        corpus_rows(path, fmt)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', r":2: duplicate qid 'q1'"),
        (b'{"_id": "q1", "text": ""}\n', r":1: empty text"),
        (b'{"_id": "q1", "text": "a"}\n[1, 2]\n', r":2: expected a JSON object"),
    ],
)
def test_queries_bad_input(tmp_path, content, message):
    path = tmp_path / "queries.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_queries(str(path), "beir")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r":2: relevance 'high' is not an integer"),
        (b"q1\td1\n", r":1: expected 3 fields"),
        (b"q1\td1\t1\nq1\td1\t0\n", r":2: duplicate judgement"),
    ],
)
def test_qrels_bad_input(tmp_path, content, message):
    path = tmp_path / "train.tsv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_qrels(str(path), "beir")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.tsv").write_bytes(b"")
    with pytest.raises(InputError, match="empty.tsv: file is empty"):
        read_qrels(str(tmp_path / "empty.tsv"), "msmarco")
    with pytest.raises(InputError, match="absent.jsonl: file not found"):
        read_queries(str(tmp_path / "absent.jsonl"), "beir")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train": "q9\td1\t1\n"}, r"train.tsv:1: qid 'q9' is not in .*queries.jsonl"),
        (
            {"dev": "q2\td2\t1\nq2\td7\t1\n"},
            r"dev.tsv:2: pid 'd7' \(query 'q2'\) is not in the corpus",
        ),
        ({"corpus": ""}, r"corpus.jsonl: file is empty"),
        (
            {"corpus": '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n'},
            r":2: duplicate pid",
        ),
    ],
)
def test_stage_errors_name_the_file_and_leave_previous_output(
    ray_session, tmp_path, kwargs, message
):
    good = prepare(config(beir(tmp_path / "good"), tmp_path / "run"))
    before = table(good, "corpus")
    bad_cfg = config(beir(tmp_path / "bad", **kwargs), tmp_path / "run")
    with pytest.raises(InputError, match=message):
        prepare(bad_cfg)
    run = RunDir.open(str(tmp_path / "run"))
    assert table(run, "corpus") == before
    assert not (tmp_path / "run" / ".staging").exists()


def test_missing_corpus_file_through_the_stage(ray_session, tmp_path):
    root = beir(tmp_path)
    (root / "corpus.jsonl").unlink()
    with pytest.raises(InputError, match="corpus.jsonl: file not found"):
        prepare(config(root, tmp_path / "run"))


def test_train_query_cap_is_a_seeded_subset(ray_session, demo_collection, tmp_path):
    cfg = config(demo_collection.root, tmp_path / "run", max_train_queries=10, seed=3)
    run = prepare(cfg)
    qids = [r["qid"] for r in table(run, "queries/train")]
    assert len(qids) == 10
    assert {r["qid"] for r in table(run, "qrels/train")} == set(qids)
    again = prepare(config(demo_collection.root, tmp_path / "run2", max_train_queries=10, seed=3))
    assert [r["qid"] for r in table(again, "queries/train")] == qids


def test_title_only_beir_documents_are_valid():
    """BEIR allows a document whose words are all in its title; one with neither is bad."""
    from raykd.data.records import parse_jsonl

    line = '{"_id": "d9", "title": "Only a title", "text": ""}'
    assert parse_jsonl(line, "corpus.jsonl", 3, with_title=True) == ("d9", "", "Only a title")
    with pytest.raises(InputError, match=r"corpus.jsonl:4: empty text"):
        parse_jsonl('{"_id": "d9", "title": " ", "text": ""}', "corpus.jsonl", 4, with_title=True)
    with pytest.raises(InputError, match=r"queries.jsonl:2: empty text"):
        parse_jsonl('{"_id": "q9", "text": ""}', "queries.jsonl", 2, with_title=False)


def test_small_files_are_checked_before_the_corpus_ingest(ray_session, tmp_path):
    """A qrels typo surfaces before the corpus goes through Ray (on MS MARCO, 8.8M passages):
    here the corpus is broken too, and the error is the qrels'."""
    root = beir(tmp_path, corpus='{"_id": "d1", "text": "a"}\n{broken\n', train="q9\td1\t1\n")
    with pytest.raises(InputError, match=r"train.tsv:1: qid 'q9' is not in"):
        prepare(config(root, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
