import pickle

import numpy as np
import pytest

from raykd.data.trec import read_qrels, read_run, run_from_arrays, write_qrels, write_run
from raykd.errors import InputError


def test_input_error_formats_and_pickles():
    assert str(InputError("a.tsv", "bad", line=3)) == "a.tsv:3: bad"
    assert str(InputError("a.parquet", "bad", row=7)) == "a.parquet: row 7: bad"
    assert str(InputError("a.tsv", "bad")) == "a.tsv: bad"
    e = pickle.loads(pickle.dumps(InputError("a.tsv", "bad", line=3)))
    assert (e.path, e.message, e.line, str(e)) == ("a.tsv", "bad", 3, "a.tsv:3: bad")
    assert isinstance(e, ValueError)


def test_run_round_trip_sorted_with_ranks(tmp_path):
    run = {
        "q2": {"d1": 0.5, "d2": 1.5, "d3": -2.0},
        "q1": {"b": 1.0, "a": 1.0, "c": np.float32(0.1)},  # tie on a/b broken by docno
    }
    path = tmp_path / "runs" / "x.trec"
    write_run(path, run, tag="bm25")
    assert path.read_text().splitlines() == [
        "q1 Q0 a 1 1.0 bm25",
        "q1 Q0 b 2 1.0 bm25",
        f"q1 Q0 c 3 {float(np.float32(0.1))!r} bm25",
        "q2 Q0 d2 1 1.5 bm25",
        "q2 Q0 d1 2 0.5 bm25",
        "q2 Q0 d3 3 -2.0 bm25",
    ]
    back = read_run(path)
    assert back == {qid: {d: float(s) for d, s in docs.items()} for qid, docs in run.items()}
    assert [p.name for p in path.parent.iterdir()] == ["x.trec"]  # no temp file left


def test_qrels_round_trip(tmp_path):
    qrels = {"1": {"d9": 0, "d1": 2}, "0": {"x": 1}}
    path = tmp_path / "q.txt"
    write_qrels(path, qrels)
    assert path.read_text() == "0 0 x 1\n1 0 d1 2\n1 0 d9 0\n"
    assert read_qrels(path) == qrels


def test_crlf_bom_tabs_and_blank_lines_accepted(tmp_path):
    run_path = tmp_path / "r.trec"
    run_path.write_bytes(b"\xef\xbb\xbfq1 Q0 d1 1 2.5 t\r\n\r\nq1\tQ0\td2\t2\t1e-3\tt\r\n")
    assert read_run(run_path) == {"q1": {"d1": 2.5, "d2": 0.001}}
    qrels_path = tmp_path / "q.txt"
    qrels_path.write_bytes(b"\xef\xbb\xbf1\t0\tp7\t1\r\n2 0 p8 -1\r\n")
    assert read_qrels(qrels_path) == {"1": {"p7": 1}, "2": {"p8": -1}}


GOOD_RUN_LINE = b"q1 Q0 d1 1 0.5 t\n"


@pytest.mark.parametrize(
    ("second_line", "expected"),
    [
        (b"q1 Q0 d2 2 0.4\n", "expected 6 fields"),
        (b"q1 Q0 d2 2 0.4 t extra\n", "got 7"),
        (b"q1 Q0 d2 2 high t\n", "score 'high' is not a number"),
        (b"q1 Q0 d2 2 nan t\n", "not finite"),
        (b"q1 Q0 d2 two 0.4 t\n", "rank 'two' is not an integer"),
        (b"q1 Q0 d1 2 0.4 t\n", "duplicate document 'd1' for query 'q1'"),
        (b"q1 Q0 d\xff 2 0.4 t\n", "not valid UTF-8"),
    ],
)
def test_malformed_run_names_file_and_line(tmp_path, second_line, expected):
    path = tmp_path / "bad.trec"
    path.write_bytes(GOOD_RUN_LINE + second_line + GOOD_RUN_LINE.replace(b"d1", b"d3"))
    with pytest.raises(InputError) as info:
        read_run(path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{path}:2: ")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("second_line", "expected"),
    [
        (b"1 0 d2\n", "expected 4 fields"),
        (b"1 0 d2 1 x\n", "got 5"),
        (b"1 0 d2 0.5\n", "relevance '0.5' is not an integer"),
        (b"1 0 d1 0\n", "duplicate judgement of 'd1' for query '1'"),
    ],
)
def test_malformed_qrels_names_file_and_line(tmp_path, second_line, expected):
    path = tmp_path / "bad.qrels"
    path.write_bytes(b"1 0 d1 1\r\n" + second_line)
    with pytest.raises(InputError) as info:
        read_qrels(path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{path}:2: ")
    assert expected in str(info.value)


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "x.trec"
    write_run(path, {"q": {"d": 1.0}})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not finite"):
        write_run(path, {"q": {"d": 2.0, "e": float("inf")}})
    with pytest.raises(ValueError, match="whitespace"):
        write_run(path, {"q": {"a b": 2.0}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.trec"]


def test_run_from_arrays_maps_ids_and_skips_padding():
    pids = np.array(["p0", "p1", "p2", "p3"])
    ids = np.array([[2, 0, 1], [3, -1, -1]])
    scores = np.array([[0.9, 0.5, 0.1], [0.7, -np.inf, -np.inf]], dtype=np.float32)
    run = run_from_arrays(["qa", "qb"], ids, scores, pids)
    assert run == {
        "qa": {"p2": pytest.approx(0.9), "p0": 0.5, "p1": pytest.approx(0.1)},
        "qb": {"p3": pytest.approx(0.7)},
    }
    assert all(type(s) is float for docs in run.values() for s in docs.values())
    assert run_from_arrays(["qa"], ids[:1], scores[:1]) == {
        "qa": {"2": pytest.approx(0.9), "0": 0.5, "1": pytest.approx(0.1)}
    }


def test_run_from_arrays_rejects_bad_shapes():
    with pytest.raises(ValueError, match="len\\(qids\\)=1"):
        run_from_arrays(["q"], np.zeros((2, 3), int), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="out of range"):
        run_from_arrays(["q"], np.array([[5]]), np.array([[1.0]]), ["p0"])
    with pytest.raises(ValueError, match="duplicates"):
        run_from_arrays(["q", "q"], np.zeros((2, 1), int), np.zeros((2, 1)))
