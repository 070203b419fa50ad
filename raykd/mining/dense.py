"""Dense pools: the training queries' top ``mining.depth`` by a bi-encoder over the whole corpus
(retrieved by ``raykd.on_ray.encoding.dense_retrieve``), as pool rows."""

from __future__ import annotations

import pyarrow as pa

from raykd.data.trec import Run
from raykd.mining.pool_merge import ranked_table


def dense_pool(run: Run, qids: list[str]) -> pa.Table:
    """Pool rows (source "dense") of a dense run, per query of ``qids`` by descending score.

    The run keeps FAISS's order within a query; a stable sort keeps it among equal scores. A
    query the run lacks gets no rows.
    """
    ranked = [sorted(run.get(q, {}).items(), key=lambda kv: -kv[1]) for q in qids]
    return ranked_table(
        qids, [[p for p, _ in r] for r in ranked], [[s for _, s in r] for r in ranked], "dense"
    )
