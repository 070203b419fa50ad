"""Arrow's query engine (Acero) plans that raykd runs: group-bys, joins, dataset row counts.

They run single-threaded (``use_threads=False``: all their CPU work on the calling thread),
because a threaded one can fail or crash in any process where Ray Data has run:

- Acero sizes a plan's per-thread aggregation and join states by
  ``ThreadIndexer::Capacity()``, a function-local static computed once per process at the first
  such plan: CPU pool + IO pool + 1 threads (arrow/cpp/src/arrow/acero/util.cc; on 2 cores
  2 + 8 + 1 = 11). A later ``pa.set_cpu_count`` / ``pa.set_io_thread_count`` grows the pools
  but not the static, and each distinct pool thread that then feeds a plan takes the next index.
- Ray Data 2.60's Parquet reader calls ``pa.set_io_thread_count(128)`` and
  ``pa.set_cpu_count(32)`` in every process that builds one (ray-project/ray#65806), the
  driver included: ``Dataset.count()`` on a ``read_parquet`` builds one while optimising the
  plan (``PushdownCountFiles``).
- So a threaded group-by of a many-chunk table after that raises ``ArrowIndexError: thread
  index 11 is out of range [0, 11)`` (``GroupByNode::Consume`` checks the index), and a
  scalar aggregate (``Dataset.count_rows``, ``group_by([])``) only ``DCHECK``s it: in a release
  build it indexes past its states (a threaded ``group_by([])`` after the steps of
  tests/test_arrow_threads.py ended the interpreter with SIGSEGV, pyarrow 26.0.1).

raykd's plans run on tables of one stage's rows, where one thread costs little; the Parquet
reads and scans around them stay threaded.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads


def group_by(table: pa.Table, keys: str | list[str]) -> pa.TableGroupBy:
    """``table.group_by(keys)``, single-threaded (see the module docstring)."""
    return table.group_by(keys, use_threads=False)


def join(left: pa.Table, right: pa.Table, keys: str | list[str]) -> pa.Table:
    """``left.join(right, keys)`` (left outer), single-threaded (see the module docstring)."""
    return left.join(right, keys=keys, use_threads=False)


def count_rows(dataset: pads.Dataset) -> int:
    """``dataset.count_rows()``, single-threaded (see the module docstring)."""
    return dataset.count_rows(use_threads=False)
