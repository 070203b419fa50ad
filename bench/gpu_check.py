"""GPU check: raykd's GPU paths on one data-centre GPU, each checked, in one table (<= 8 min).

Sections (each verifies its own result; a wrong result fails the run, exit 1):
- score: teacher scoring pairs/s, raykd's cross-encoder actor (the score stage's tokeniser
  pre-stage, length-sorted, bf16 autocast) on a MiniLM-L6 cross-encoder built from the
  all-MiniLM-L6-v2 weights at 128 tokens, against the GPU's peak bf16 FLOP/s (2 x params x
  tokens per pair) and against sentence-transformers' ``CrossEncoder.predict`` in fp16 on the
  same pairs. Check: bf16 scores against fp32 (Pearson >= 0.999).
- encode: corpus encoding passages/s, raykd's encoding actor in bf16 against
  ``SentenceTransformer.encode`` in fp16. Check: cosine to fp32 embeddings >= 0.999.
- faiss: raykd's index build + search (``raykd.retrieval.index``, its default IVF-PQ) on the GPU
  against the CPU, on the same clustered synthetic vectors. Checks against exact search: the
  index is where it was asked to be, flat recall@10 >= 0.99, IVF-PQ's 1-recall@10 >= 0.3 on the
  CPU and within 0.05 of it on the GPU.
- train: ``bench/train_throughput.py`` on the GPU (DeepSpeed ZeRO-2, bf16): the raykd loop
  against a bare torch loop, and its loss must fall.
- demo: ``raykd demo`` end to end with every ``use_gpu``/``num_gpus`` on; its student must beat
  its init.

A section whose packages are missing (the GPU image lacks Ray, DeepSpeed and faiss-gpu; see
the device notes for carrying wheels) prints ``skipped`` with the reason. Without a CUDA GPU
the script exits at once (exit 2), saying so. ``--cpu`` runs the score and encode sections on
the CPU at small sizes, in fp32, to test the script itself (tests/test_gpu_check.py).

    python bench/gpu_check.py            # on the GPU machine
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
# The bench helpers, and raykd from this checkout where it is not installed (a bare GPU image).
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from encode_throughput import run_st, run_steady  # noqa: E402
from teacher_throughput import build_model, load_pairs, raykd_scores, run_cross_encoder  # noqa: E402

from raykd.planning.flops import model_shape  # noqa: E402
from raykd.planning.hardware import gpu_peak  # noqa: E402

HALF = {"cuda": "fp16", "cpu": "fp32"}  # what the sentence-transformers baselines run in


class CheckFailed(AssertionError):
    """A section ran but its result is wrong."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def section_score(args, device: str) -> list[tuple[str, str]]:
    import torch

    _, queries, passages = load_pairs(args.pairs)
    model = build_model(Path(tempfile.mkdtemp()) / "minilm-ce")
    low = "bf16" if device == "cuda" else "fp32"
    kw = {"batch": args.batch, "max_length": 128}
    raykd_scores(model, queries[: args.batch], passages[: args.batch], dtype=low, **kw)  # warm
    start = time.perf_counter()  # the scores come back as numpy: the GPU work is done
    scores, tokens = raykd_scores(model, queries, passages, dtype=low, **kw)
    secs = time.perf_counter() - start
    ref, _ = raykd_scores(model, queries, passages, dtype="fp32", **kw)
    corr = float(np.corrcoef(scores, ref)[0, 1])
    check(corr >= 0.999, f"score: {low} against fp32 scores, Pearson {corr:.5f} < 0.999")

    threads = os.cpu_count() or 1
    ce_rate, _ = run_cross_encoder(model, queries, passages, batch_size=args.batch,
                                   max_length=128, threads=threads, device=device)  # fmt: skip
    rate = len(queries) / secs
    rows = [
        ("score: raykd actor", f"{rate:,.0f} pairs/s ({low}, {len(queries):,} pairs)"),
        ("score: CrossEncoder.predict", f"{ce_rate:,.0f} pairs/s ({HALF[device]})"),
        ("score: ratio raykd / CrossEncoder", f"{rate / ce_rate:.2f}x (target >= 1.5x on GPU)"),
        (f"score: {low} vs fp32", f"Pearson {corr:.5f} (>= 0.999)"),
    ]
    peak = gpu_peak(torch.cuda.get_device_name()) if device == "cuda" else None
    if peak:
        used = model_shape(model, "score model").forward_flops(tokens) / secs
        rows.append(("score: FLOP/s of peak bf16", f"{used / 1e12:.1f} T = {used / peak:.1%}"))
    return rows


def section_encode(args, device: str) -> list[tuple[str, str]]:
    import pyarrow as pa

    _, _, passages = load_pairs(args.passages)
    n = len(passages)
    table = pa.table({"pid": [str(i) for i in range(n)], "title": [""] * n, "text": passages})
    low = "bf16" if device == "cuda" else "fp32"
    sizes = {"batch_size": args.batch, "max_length": 256, "threads": os.cpu_count() or 1}
    rate, vecs = run_steady(table, dtype=low, **sizes)
    _, ref = run_steady(table, dtype="fp32", **sizes)
    cos = float(np.min(np.sum(vecs * ref, axis=1)))
    check(cos >= 0.999, f"encode: {low} against fp32 embeddings, min cosine {cos:.5f} < 0.999")
    st_rate, _ = run_st(passages, device=device, **sizes)
    return [
        ("encode: raykd actor", f"{rate:,.0f} passages/s ({low}, 256 tokens)"),
        ("encode: SentenceTransformer", f"{st_rate:,.0f} passages/s ({HALF[device]})"),
        ("encode: ratio raykd / ST", f"{rate / st_rate:.2f}x (target >= 1.5x on GPU)"),
        (f"encode: {low} vs fp32", f"min cosine {cos:.5f} (>= 0.999)"),
    ]


def recall_at(found: np.ndarray, exact: np.ndarray, k: int = 10, of: int | None = None) -> float:
    """Mean fraction of each query's exact top ``of`` ids (default ``k``) that ``found`` holds in
    its top ``k``: ``of=1`` is FAISS's 1-recall@k."""
    of = of or k
    hits = [len(set(f[:k]) & set(e[:of])) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / of


def clustered(rng, centers: np.ndarray, n: int) -> np.ndarray:
    """Unit vectors around random centres: corpus-like structure for IVF to find."""
    x = centers[rng.integers(len(centers), size=n)]
    x = x + 0.5 * rng.standard_normal(x.shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def section_faiss(args, device: str) -> list[tuple[str, str]]:
    """raykd's own index builder and search, on the CPU and on the GPU, for each index type."""
    try:
        import faiss

        from raykd.config import IndexSpec
        from raykd.retrieval.index import build_index, search
    except ImportError:
        return [("faiss", "skipped: faiss is not installed")]
    if device == "cuda" and faiss.get_num_gpus() == 0:
        return [("faiss", "skipped: this faiss sees no GPU (faiss-cpu)")]
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((max(args.vectors // 50, 1), 384), dtype=np.float32)
    xb, xq = clustered(rng, centers, args.vectors), clustered(rng, centers, 1000)
    _, truth = search(build_index([xb], 384, IndexSpec(type="flat")), xq, 10)
    rows = []
    for kind in ("flat", "ivf_pq"):
        times, recall = {}, {}
        for where in ("cpu", "cuda") if device == "cuda" else ("cpu",):
            start = time.perf_counter()
            # Added in 10 shards, as the eval adds its embedding files (IVF trains on the first).
            index = build_index(np.array_split(xb, 10), 384, IndexSpec(type=kind,
                                use_gpu=where == "cuda"))  # fmt: skip
            on_gpu = "Gpu" in type(index).__name__ or isinstance(index, faiss.IndexReplicas)
            check(on_gpu == (where == "cuda"), f"faiss {kind}: the index is not on {where}")
            _, ids = search(index, xq, 10)
            times[where] = time.perf_counter() - start
            # Flat finds the exact top 10; IVF-PQ is scored on the nearest neighbour in its top 10.
            recall[where] = recall_at(ids, truth, of=None if kind == "flat" else 1)
            what = "recall@10" if kind == "flat" else "1-recall@10"
            rows.append(
                (f"faiss {kind} {where}", f"{times[where]:.2f} s, {what} {recall[where]:.3f}")
            )
        floor = 0.99 if kind == "flat" else 0.3
        check(recall["cpu"] >= floor, f"faiss {kind} on cpu: recall {recall['cpu']:.3f} < {floor}")
        if len(times) == 2:
            gap = recall["cpu"] - recall["cuda"]
            check(gap <= 0.05, f"faiss {kind}: GPU recall {gap:.3f} below the CPU's")
            rows.append((f"faiss {kind}: GPU speed-up", f"{times['cpu'] / times['cuda']:.1f}x"))
    return rows


def _missing(*modules: str) -> str | None:
    import importlib.util

    gone = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"skipped: {', '.join(gone)} not installed" if gone else None


def section_train(args, device: str) -> list[tuple[str, str]]:
    if why := _missing("ray", "deepspeed"):
        return [("train", why)]
    cmd = [sys.executable, str(BENCH / "train_throughput.py"), "--gpu", "--batch", "32",
           "--steps", "40", "--warmup", "4", "--max-passage-length", "256"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    check(out.returncode == 0, f"train: train_throughput.py failed:\n{out.stdout[-2000:]}")
    lines = [ln.split(": ", 1) for ln in out.stdout.splitlines()]
    rows = [(f"train: {k}", v) for k, v in lines if k.startswith(("bare", "raykd", "ratio"))]
    first, last = (float(x.split()[-1]) for x in dict(lines)["raykd loss"].split(", "))
    check(last < first, f"train: the loss did not fall ({first:.4f} -> {last:.4f})")
    return rows


def section_demo(args, device: str) -> list[tuple[str, str]]:
    if why := _missing("ray", "deepspeed"):
        return [("demo", why)]
    run = Path(tempfile.mkdtemp()) / "demo"
    # The demo's teacher and miner are BM25 (CPU); its GPU work is training and the eval.
    gpu = ["train.use_gpu=true", "eval.actors.num_gpus=1"]
    cmd = [sys.executable, "-m", "raykd.cli", "demo", "--run-dir", str(run)]
    cmd += [a for s in gpu for a in ("--set", s)]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=360)
    check(out.returncode == 0, f"demo failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    table = [ln for ln in out.stdout.splitlines() if ln.startswith(("init ", "student "))]
    ndcg = {ln.split()[0]: float(ln.split()[2]) for ln in table}
    check(ndcg.get("student", 0) > ndcg.get("init", 1), f"demo: student did not beat init {ndcg}")
    return [("demo end to end", f"{time.perf_counter() - start:.0f} s, nDCG@10 {ndcg}")]


SECTIONS = {"score": section_score, "encode": section_encode, "faiss": section_faiss,
            "train": section_train, "demo": section_demo}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu", action="store_true", help="score and encode on the CPU (a test)")
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS), help="these sections alone")
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--passages", type=int, default=20_000)
    ap.add_argument("--vectors", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)

    import torch

    if args.cpu:
        device, names = "cpu", args.only or ["score", "encode"]
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing checked")
        return 2
    else:
        device, names = "cuda", args.only or list(SECTIONS)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none (--cpu)"
    rows: list[tuple[str, str]] = [("device", gpu), ("torch", torch.__version__)]
    failed = []
    start = time.perf_counter()
    for name in names:
        try:
            rows += SECTIONS[name](args, device)
        except CheckFailed as err:
            failed.append(name)
            rows.append((name, f"FAILED: {err}"))
    rows.append(("wall time", f"{time.perf_counter() - start:.0f} s"))
    width = max(len(k) for k, _ in rows)
    print(f"| {'check':<{width}} | result |\n| {'-' * width} | --- |")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
