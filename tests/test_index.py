import logging
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pydantic
import pytest

import raykd
from raykd.config import IndexSpec
from raykd.retrieval.index import build_index, load_index, save_index, search

DIM = 32


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return _unit(rng, 2000), _unit(rng, 100)


def _exact_top(x, q, k):
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def _recall(ids, exact):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact, strict=True)])


def test_flat_equals_brute_force(data):
    x, q = data
    index = build_index([x], DIM, IndexSpec())
    scores, ids = search(index, q, 10)
    np.testing.assert_array_equal(ids, _exact_top(x, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), rtol=1e-5)


def test_ivf_flat_with_every_list_probed_is_exact(data):
    x, q = data
    index = build_index([x], DIM, IndexSpec(type="ivf_flat", nlist=16, nprobe=16))
    _, ids = search(index, q, 10)
    np.testing.assert_array_equal(ids, _exact_top(x, q, 10))


@pytest.mark.parametrize(
    ("spec", "min_recall"),
    [
        (IndexSpec(type="hnsw", hnsw_m=16, ef_construction=100, ef_search=64), 0.95),
        (IndexSpec(type="ivf_pq", nlist=16, nprobe=16, pq_m=16), 0.7),
    ],
)
def test_approximate_recall(data, spec, min_recall):
    x, q = data
    _, ids = search(build_index([x], DIM, spec), q, 10)
    assert _recall(ids, _exact_top(x, q, 10)) >= min_recall


@pytest.mark.parametrize("spec", [IndexSpec(), IndexSpec(type="ivf_flat", nlist=16, nprobe=4)])
def test_sharded_add_equals_single_add(data, spec):
    x, q = data
    whole = build_index([x], DIM, spec, train_sample=x)
    sharded = build_index((s for s in np.array_split(x, 7)), DIM, spec, train_sample=x)
    assert sharded.ntotal == whole.ntotal == len(x)
    for a, b in zip(search(whole, q, 20), search(sharded, q, 20), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trains_on_first_shard_by_default(data):
    x, _ = data
    index = build_index(iter([x[:500], x[500:]]), DIM, IndexSpec(type="ivf_flat", nlist=8))
    assert index.is_trained and index.ntotal == len(x)


def test_too_few_training_vectors(data):
    x, _ = data
    with pytest.raises(ValueError, match="at least 64 training vectors, got 10"):
        build_index([x], DIM, IndexSpec(type="ivf_flat", nlist=64), train_sample=x[:10])
    with pytest.raises(ValueError, match="at least 256 training vectors, got 100"):
        build_index([x[:100]], DIM, IndexSpec(type="ivf_pq", nlist=4, pq_m=8))
    with pytest.raises(ValueError, match="no shards"):
        build_index([], DIM, IndexSpec(type="ivf_flat", nlist=4))


@pytest.mark.parametrize(
    "spec",
    [IndexSpec(type="ivf_flat", nlist=16, nprobe=3), IndexSpec(type="hnsw", ef_search=40)],
)
def test_save_load_round_trip(tmp_path, data, spec):
    x, q = data
    index = build_index([x], DIM, spec)
    path = tmp_path / "sub" / "index.faiss"
    save_index(index, path)
    assert [p.name for p in path.parent.iterdir()] == ["index.faiss"]
    loaded = load_index(path)
    for a, b in zip(search(index, q, 10), search(loaded, q, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    if spec.type == "ivf_flat":
        assert faiss.extract_index_ivf(loaded).nprobe == 3
        wider = load_index(path, spec.model_copy(update={"nprobe": 16}))
        np.testing.assert_array_equal(search(wider, q, 10)[1], _exact_top(x, q, 10))
    else:
        assert loaded.hnsw.efSearch == 40
    with pytest.raises(ValueError, match="does not match"):
        load_index(path, IndexSpec(type="hnsw" if spec.type == "ivf_flat" else "ivf_flat"))


def test_search_batches_and_clips_k(data):
    x, q = data
    index = build_index([x], DIM)
    for a, b in zip(search(index, q, 10), search(index, q, 10, batch_size=7), strict=True):
        np.testing.assert_array_equal(a, b)
    scores, ids = search(build_index([x[:5]], DIM), q, 10)
    assert scores.shape == ids.shape == (len(q), 5)
    assert search(build_index([], DIM), q, 10)[1].shape == (len(q), 0)


def test_bad_inputs(data):
    x, q = data
    with pytest.raises(ValueError, match=r"shape \(n, 32\)"):
        build_index([x[:, :16]], DIM)
    with pytest.raises(ValueError, match="NaN"):
        build_index([np.full((3, DIM), np.nan)], DIM)
    with pytest.raises(ValueError, match="pq_m=5 must divide"):
        build_index([x], DIM, IndexSpec(type="ivf_pq", nlist=4, pq_m=5))
    with pytest.raises(ValueError, match="k and batch_size"):
        search(build_index([x], DIM), q, 0)
    with pytest.raises(pydantic.ValidationError):
        IndexSpec(type="flat", nprobes=3)
    with pytest.raises(pydantic.ValidationError):
        IndexSpec(type="ivf_hnsw")


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="checks the CPU fallback")
def test_use_gpu_without_gpu_warns_and_stays_on_cpu(data, caplog):
    x, q = data
    with caplog.at_level(logging.WARNING, logger="raykd.retrieval.index"):
        index = build_index([x], DIM, IndexSpec(use_gpu=True))
    assert "no GPU" in caplog.text
    assert isinstance(index, faiss.IndexFlat)
    np.testing.assert_array_equal(search(index, q, 10)[1], _exact_top(x, q, 10))


def test_module_does_not_import_torch():
    code = "import sys, raykd.retrieval.index; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(raykd.__file__).parents[1])
