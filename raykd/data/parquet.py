"""A Parquet folder whose files and row groups depend only on the row sequence, so a stage's
output is byte-identical however Ray Data batched the stream that fed it."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq


class FixedLayoutWriter:
    """Parquet files of exactly ``rows_per_file`` rows (the last: the rest) in row groups of
    ``rows_per_group`` rows, named ``part-00000.parquet`` on in ``folder`` of ``run_fs``.

    ``write`` takes tables with at least the schema's columns (others are dropped); ``close``
    flushes and returns the rows written; ``files`` counts the files.
    """

    def __init__(
        self, run_fs, folder: str, schema: pa.Schema, rows_per_group: int, rows_per_file: int
    ) -> None:
        self.fs, self.folder, self.schema = run_fs, folder, schema
        self.rows_per_group, self.rows_per_file = rows_per_group, rows_per_file
        self.pending: list[pa.Table] = []
        self.n_pending = 0
        self.writer: pq.ParquetWriter | None = None
        self.in_file = 0
        self.files = 0
        self.rows = 0
        self.fs.create_dir(folder, recursive=True)

    def write(self, table: pa.Table) -> None:
        self.pending.append(table.select(self.schema.names).cast(self.schema))
        self.n_pending += table.num_rows
        while self.n_pending >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.pending)
        if self.writer is None:
            path = f"{self.folder}/part-{self.files:05d}.parquet"
            self.writer = pq.ParquetWriter(path, self.schema, filesystem=self.fs)
        take = min(n, self.rows_per_file - self.in_file)
        self.writer.write_table(table.slice(0, take), row_group_size=take)
        self.in_file += take
        self.rows += take
        rest = table.slice(take)
        self.pending, self.n_pending = [rest], rest.num_rows
        if self.in_file == self.rows_per_file:
            self.writer.close()
            self.writer, self.in_file = None, 0
            self.files += 1

    def close(self) -> int:
        while self.n_pending:
            self._flush(min(self.n_pending, self.rows_per_group))
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.files += 1
        elif self.rows == 0 and self.files == 0:  # an empty output is still a readable folder
            pq.write_table(
                self.schema.empty_table(), f"{self.folder}/part-00000.parquet", filesystem=self.fs
            )
            self.files = 1
        return self.rows
