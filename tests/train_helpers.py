"""Test inputs for the train and teacher-train stages, written from the prepared demo run.

The build and mine stages are written elsewhere; these tests write small TRAIN and POOL Parquet
files themselves (synthetic teacher scores with the positive highest) and commit an upstream
manifest, so the stage under test runs exactly as in the pipeline.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raykd.candidates.confidence import confidence
from raykd.data.schemas import POOL, TRAIN
from raykd.run_dir import RunDir


def demo_texts(prepared: RunDir, split: str = "train"):
    """(corpus {pid: text}, queries {qid: text}, positives {qid: pid}) of a prepared run."""
    corpus = pq.read_table(prepared.path("corpus")).to_pydict()
    queries = pq.read_table(prepared.path(f"queries/{split}")).to_pydict()
    qrels = pq.read_table(prepared.path(f"qrels/{split}")).to_pydict()
    texts = dict(zip(corpus["pid"], corpus["text"], strict=True))
    qtexts = dict(zip(queries["qid"], queries["text"], strict=True))
    pos: dict[str, str] = {}
    for qid, pid, rel in zip(qrels["qid"], qrels["pid"], qrels["rel"], strict=True):
        if rel > 0 and (qid not in pos):
            pos[qid] = pid
    return texts, qtexts, pos


def write_train_set(
    prepared: RunDir, run: RunDir, strategy: str, *, n_neg: int = 4, seed: int = 0
) -> int:
    """A TRAIN Parquet under ``run`` for ``strategy`` plus a committed ``build`` manifest.

    Negatives are random passages; the teacher scores the positive highest. For "dark", each
    query also gets a reinforced negative (pos + [SEP] + neg) and a masked positive, and every
    other query one negative fewer, so candidate lists differ in length (padding is exercised).
    """
    rng = random.Random(seed)
    texts, qtexts, pos = demo_texts(prepared)
    pids = sorted(texts)
    rows: dict[str, list] = {k: [] for k in TRAIN.names}
    for i, qid in enumerate(sorted(pos)):
        p = pos[qid]
        negs = rng.sample([x for x in pids if x != p], n_neg - (i % 2 if strategy == "dark" else 0))
        cands = [texts[n] for n in negs]
        kinds = ["pos"] + ["neg"] * len(negs)
        teacher = [6.0 + rng.gauss(0, 1)] + [rng.gauss(0, 1) for _ in negs]
        if strategy == "dark":
            words = texts[p].split()
            masked = " ".join("[MASK]" if rng.random() < 0.3 else w for w in words)
            cands += [f"{texts[p]} [SEP] {texts[negs[0]]}", masked]
            kinds += ["rein", "mask"]
            teacher += [3.0 + rng.gauss(0, 1), 4.0 + rng.gauss(0, 1)]
        neg_scores = np.array([s for s, k in zip(teacher, kinds, strict=True) if k == "neg"])
        rows["qid"].append(qid)
        rows["query"].append(qtexts[qid])
        rows["pos"].append(texts[p])
        rows["cands"].append(cands)
        rows["teacher"].append(teacher)
        rows["kinds"].append(kinds)
        rows["confidence"].append(float(confidence(teacher[0], neg_scores)))
    dest = Path(run.path(f"train/{strategy}"))
    dest.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(rows, schema=TRAIN), dest / "part-0.parquet")
    run.write_json("manifests/build.json", {"fingerprint": f"test-build-{strategy}-{seed}"})
    return len(rows["qid"])


def write_pool(prepared: RunDir, run: RunDir, *, per_query: int = 20, seed: int = 0) -> None:
    """A POOL Parquet of random pids per train query, plus committed prepare/mine manifests and
    the prepared corpus, queries and qrels copied into ``run``."""
    import shutil

    rng = random.Random(seed)
    texts, _, pos = demo_texts(prepared)
    pids = sorted(texts)
    for rel in ("corpus", "queries", "qrels"):
        shutil.copytree(prepared.path(rel), run.path(rel))
    rows: dict[str, list] = {k: [] for k in POOL.names}
    for qid in sorted(pos):
        for rank, pid in enumerate(rng.sample(pids, per_query), start=1):
            rows["qid"].append(qid)
            rows["pid"].append(pid)
            rows["rank"].append(rank)
            rows["score"].append(float(-rank))
            rows["source"].append("random")
    dest = Path(run.path("pool"))
    dest.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict(rows, schema=POOL), dest / "part-0.parquet")
    run.write_json("manifests/prepare.json", {"fingerprint": "test-prepare"})
    run.write_json("manifests/mine.json", {"fingerprint": "test-mine"})


class WorkerKiller(threading.Thread):
    """SIGKILLs one live Ray Train worker of this test's cluster once ``ready()`` returns
    something truthy, which it keeps as ``trigger`` (what the test saw when it killed).

    Worker PIDs come from GCS's actor table (this cluster only, never other users' processes):
    a millisecond, where Ray's state API goes through the dashboard, which a loaded 2-core
    machine can hold up for seconds while training runs past the moment the test wants.
    """

    def __init__(self, ready, *, timeout: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.ready = ready
        self.timeout = timeout
        self.killed: int | None = None
        self.trigger = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        import os
        import signal

        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            trigger = self.ready()
            if trigger:
                pids = train_worker_pids()
                if pids:
                    self.killed, self.trigger = pids[-1], trigger
                    os.kill(self.killed, signal.SIGKILL)
                    return
            time.sleep(0.05)


def train_worker_pids() -> list[int]:
    """PIDs of the live Ray Train workers of the connected cluster, from GCS's actor table."""
    from ray._private.state import actors

    return [
        int(a["Pid"])
        for a in actors().values()
        if a["State"] == "ALIVE" and "TrainWorker" in a["ActorClassName"] and a["Pid"]
    ]


def checkpoint_dirs(run: RunDir) -> list[Path]:
    root = Path(run.path("checkpoints"))
    return sorted(root.glob("*/checkpoint_*")) if root.is_dir() else []
