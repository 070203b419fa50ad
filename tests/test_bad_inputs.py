"""A catalogue of bad inputs, data and config, each through the ``raykd`` command (in-process,
on the session's Ray): the exit code, a message of a few lines that names the file and line or
the config key, and a run dir left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from raykd.cli import main

CORPUS = [{"_id": f"d{i}", "title": f"T{i}", "text": f"word{i} shared text"} for i in range(12)]
QUERIES = [{"_id": f"q{i}", "text": f"word{i}?"} for i in range(6)]
QRELS_HEAD = "query-id\tcorpus-id\tscore\n"


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_collection(root: Path, **files: str | bytes | None) -> Path:
    """A small BEIR collection; ``files`` replaces a file's content (None: leaves it out)."""
    default = {
        "corpus.jsonl": jsonl(CORPUS),
        "queries.jsonl": jsonl(QUERIES),
        "qrels/train.tsv": QRELS_HEAD + "".join(f"q{i}\td{i}\t1\n" for i in range(4)),
        "qrels/dev.tsv": QRELS_HEAD + "q4\td4\t1\nq5\td5\t2\n",
    }
    default.update({k.replace("__", "/"): v for k, v in files.items()})
    for rel, content in default.items():
        if content is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def error_block(err: str) -> str:
    """The console from its error on, without the story lines (stages started) before it."""
    at = err.find("raykd: error: ")
    return err if at < 0 else err[at:]


def snapshot(root: Path) -> dict[str, str] | None:
    """Every file under ``root`` with its content hash (None: no run dir)."""
    if not root.exists():
        return None
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def good(tmp_path_factory, ray_session):
    """A job file over a good collection, and a run dir where ``prepare`` has committed."""
    root = tmp_path_factory.mktemp("bad-inputs")
    collection = write_collection(root / "collection")
    job = root / "job.yaml"
    job.write_text(f"data:\n  format: beir\n  path: {collection}\nmining:\n  depth: 5\n")
    run = root / "run"
    assert main(["prepare", "--config", str(job), "--run-dir", str(run)]) == 0
    return job, run


@pytest.fixture
def copy(good, tmp_path, monkeypatch):
    """The job file, a copy of the good run dir to fail on, and that copy's snapshot."""
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    job, base = good
    run = tmp_path / "run"
    shutil.copytree(base, run)
    return job, run, snapshot(run)


DATA_CASES = {
    "truncated JSON": (
        {"corpus.jsonl": jsonl(CORPUS[:3]) + '{"_id": "x", "text": "cut\n'},
        r"corpus\.jsonl:4: bad JSON",
    ),
    "duplicate passage id": (
        {"corpus.jsonl": jsonl(CORPUS + CORPUS[2:3])},
        r"corpus\.jsonl:13: duplicate pid",
    ),
    "bad UTF-8": (
        {"corpus.jsonl": jsonl(CORPUS[:5]).encode() + b'{"_id": "z", "text": "\xff\xfe"}\n'},
        r"corpus\.jsonl:6: .*UTF-8",
    ),
    "query without an id": (
        {"queries.jsonl": jsonl(QUERIES) + '{"text": "no id"}\n'},
        r"queries\.jsonl:7: ",
    ),
    "qrels of an unknown query": (
        {"qrels__train.tsv": QRELS_HEAD + "q1\td1\t1\nq99\td2\t1\n"},
        r"qrels/train\.tsv:3: .*q99",
    ),
    "non-integer relevance": (
        {"qrels__train.tsv": QRELS_HEAD + "q1\td1\thigh\n"},
        r"qrels/train\.tsv:2: .*relevance",
    ),
    "qrels of an unknown passage": (
        {"qrels__dev.tsv": QRELS_HEAD + "q4\td404\t1\n"},
        r"qrels/dev\.tsv:2: .*d404",
    ),
    "empty corpus": ({"corpus.jsonl": ""}, r"corpus\.jsonl: .*empty"),
    "missing queries file": ({"queries.jsonl": None}, r"queries\.jsonl: .*not found"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(case, copy, tmp_path, capsys):
    job, run, before = copy
    files, message = DATA_CASES[case]
    bad = write_collection(tmp_path / "bad", **files)
    code = main(
        ["prepare", "--config", str(job), "--run-dir", str(run), "--set", f"data.path={bad}"]
    )
    err = error_block(capsys.readouterr().err)
    assert code == 2, err
    assert len(err.strip().splitlines()) < 5, err
    first = err.strip().splitlines()[0]
    assert first.startswith("raykd: error: ") and str(bad) in first, err
    assert __import__("re").search(message, first), err
    assert snapshot(run) == before


def test_missing_data_folder_names_data_path(copy, tmp_path, capsys):
    job, run, before = copy
    missing = tmp_path / "nowhere"
    code = main(
        ["prepare", "--config", str(job), "--run-dir", str(run), "--set", f"data.path={missing}"]
    )
    err = error_block(capsys.readouterr().err)
    assert code == 2 and "data.path" in err and str(missing) in err, err
    assert len(err.strip().splitlines()) < 5, err
    assert snapshot(run) == before


CONFIG_CASES = {
    "negative lr": (["train.lr=-1"], "--set: train.lr: Input should be greater than 0"),
    "NaN lr": (["train.lr=.nan"], "train.lr: Input should be a finite number"),
    "negative warm-up": (["train.warmup_steps=-1"], "train.warmup_steps: Input should be"),
    "zero eval depth": (["eval.depth=0"], "eval.depth: Input should be greater"),
    "no pool sources": (["mining.sources=[]"], "mining.sources: List should have at least 1"),
    "misspelt key": (["candidates.n_strats=3"], "did you mean 'n_strata'?"),
    "more strata than negatives": (["candidates.n_strata=20"], "candidates.n_strata 20 > "),
    "m beyond the pool": (["candidates.m=500"], "candidates.m 500 > "),
    "rerank deeper than retrieval": (["eval.rerank_depth=2000"], "eval.rerank_depth 2000 > "),
    "dark without kl": (
        ["candidates.strategy=dark", "train.loss=margin_mse", "candidates.m=4", "augment.n_rein=4"],
        "'dark' is distilled with kl",
    ),
    "not key=value": (["candidates.m"], "expected dotted.path=value"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(case, copy, capsys):
    job, run, before = copy
    overrides, message = CONFIG_CASES[case]
    argv = ["build", "--config", str(job), "--run-dir", str(run)]
    code = main(argv + [a for o in overrides for a in ("--set", o)])
    err = error_block(capsys.readouterr().err)
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) < 5, err
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the config file is empty"),
        ("data: [unclosed\n", "not valid YAML"),
        ("data:\n  format: beir\ncandidates:\n  n_strats: 2\n", "job.yaml:4: candidates.n_strats"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_job_file(content, message, copy, tmp_path, capsys):
    _, run, before = copy
    job = tmp_path / "job.yaml"
    job.write_text(content)
    code = main(["prepare", "--config", str(job), "--run-dir", str(run)])
    err = error_block(capsys.readouterr().err)
    assert code == 2 and message in err and "job.yaml" in err, err
    assert len(err.strip().splitlines()) < 5, err
    assert snapshot(run) == before


def test_missing_job_file_and_stage_out_of_order(good, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    job, _ = good
    fresh = tmp_path / "fresh"
    assert main(["prepare", "--config", str(tmp_path / "nope.yaml"), "--run-dir", str(fresh)]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err
    # A stage before the stages it reads: says what to run instead, and leaves no run dir.
    assert main(["eval", "--config", str(job), "--run-dir", str(fresh)]) == 2
    err = error_block(capsys.readouterr().err)
    assert "stage 'eval' needs 'prepare' to have run first" in err
    assert "raykd run --config" in err and len(err.strip().splitlines()) < 5, err
    assert snapshot(fresh) is None


def test_a_failed_stage_keeps_the_job_file_of_the_committed_outputs(copy, tmp_path, capsys):
    """A stage that fails (here on bad data, inside Ray) leaves job.yaml as the last commit
    wrote it, so stage commands that read it describe the outputs that are there."""
    _, run, _ = copy
    committed = (run / "job.yaml").read_text()
    bad = write_collection(tmp_path / "bad", **{"corpus.jsonl": "{\n"})
    argv = ["prepare", "--run-dir", str(run), "--set", f"data.path={bad}", "--set", "data.seed=7"]
    assert main(argv) == 2
    capsys.readouterr()
    assert (run / "job.yaml").read_text() == committed
    assert "seed: 7" not in committed


def test_an_unexpected_failure_is_one_line_and_a_log(copy, tmp_path, capsys, monkeypatch):
    """A failure raykd did not foresee (here a stage that raises) still ends with one
    ``raykd: error:`` line and the log's path; the traceback is in the log, not the console."""
    from raykd.stages import mine

    def broken(ctx):
        raise ZeroDivisionError("division by zero in a stage")

    monkeypatch.setattr(mine, "run_mine", broken)
    job, run, before = copy
    assert main(["mine", "--config", str(job), "--run-dir", str(run)]) == 1
    err = error_block(capsys.readouterr().err)
    assert err.splitlines()[0] == "raykd: error: ZeroDivisionError: division by zero in a stage"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    (log,) = (tmp_path / "logs").iterdir()
    assert "Traceback" in log.read_text() and "in broken" in log.read_text()
    assert snapshot(run) == before
