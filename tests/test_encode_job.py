"""Corpus encoding on Ray Data: every passage once, equal to TextEncoder on the same texts."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from raykd.config import ActorPoolSpec
from raykd.data.passages import passage_texts
from raykd.on_ray.encoding import encode_corpus
from raykd.retrieval.dense_search import DenseModel
from raykd.retrieval.embeddings import iter_embedding_shards
from raykd.retrieval.encoder import TextEncoder
from raykd.retrieval.index import build_index, search


def test_encode_corpus_matches_text_encoder(prepared_run, demo_collection, tmp_path):
    run = prepared_run
    corpus = pads.dataset(run.path("corpus"), filesystem=run.fs).to_table()
    out = str(tmp_path / "emb")
    kwargs = dict(pooling="mean", normalize=True, max_length=128)
    model = DenseModel(str(demo_collection.student_dir), "mean", True, passage_max_length=128)
    n = encode_corpus(
        run.uri_of("corpus"), out, model, ActorPoolSpec(batch_size=100), key="eval.actors"
    )
    assert n == corpus.num_rows
    pids, shards = [], []
    for shard_pids, vecs in iter_embedding_shards(out):
        assert vecs.dtype == np.float32 and vecs.shape == (len(shard_pids), vecs.shape[1])
        pids.extend(shard_pids)
        shards.append(vecs)
    assert sorted(pids) == sorted(corpus.column("pid").to_pylist())
    got = np.concatenate(shards)
    encoder = TextEncoder(str(demo_collection.student_dir), **kwargs)
    order = {p: i for i, p in enumerate(corpus.column("pid").to_pylist())}
    texts = passage_texts(corpus)
    want = encoder.encode([texts[order[p]] for p in pids], batch_size=64)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The shard stream feeds FAISS directly; a passage is its own nearest neighbour.
    index = build_index((v for _, v in iter_embedding_shards(out)), encoder.dim)
    _, rows = search(index, want[:5], 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_iter_embedding_shards_reads_variable_length_lists(tmp_path):
    import pyarrow as pa

    pq.write_table(
        pa.table({"pid": ["a", "b"], "embedding": [[1.0, 2.0], [3.0, 4.0]]}),
        tmp_path / "part-1.parquet",
    )
    pq.write_table(
        pa.table(
            {"pid": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))}
        ),
        tmp_path / "part-0.parquet",
    )
    (shard,) = list(iter_embedding_shards(str(tmp_path)))
    assert shard[0] == ["a", "b"]
    np.testing.assert_array_equal(shard[1], np.array([[1, 2], [3, 4]], dtype=np.float32))
