"""Sharded parquet files as a source of the engine (read by the workers themselves; the driver reads only the files'
footers), and the models whose outputs are a column of them. The in-memory source is the engine's own
(:mod:`kdaudit.harness._source`).

A unit's boundaries depend on the data only, never on the number of workers: that is what lets every executor
merge the same states in the same order (see ``_base``).
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kdaudit._exceptions import invalid_argument
from kdaudit.data._audit_data import AuditData, hash_array_like
from kdaudit.harness._source import DEFAULT_BLOCK_ROWS, Block, MemorySource
from kdaudit.harness._source import check_block_rows as _check_block_rows
from kdaudit.models._base import Access, ModelAdapter

__all__ = ["DEFAULT_BLOCK_ROWS", "ColumnModel", "MemorySource", "ParquetSource"]


class ColumnModel(ModelAdapter):
    """A model whose outputs are a column of a :class:`ParquetSource` (outputs computed elsewhere, at scale).

    Parameters
    ----------
    column : str
        The column: a list (or fixed-size list) of ``n_classes`` numbers per row, or an integer label per row.
    n_classes : int
    name : str, optional
        Default: the column name.
    kind : {"probabilities", "logits", "labels"}
    classes : sequence of str, optional

    The outputs are part of the data, so the model's fingerprint names the column and the data's hash covers its
    values. Each worker reads the column of its unit; no row reaches the driver.
    """

    kind = "column"

    def __init__(self, column: str, *, n_classes: int, name: str | None = None, kind: str = "probabilities",
                 classes: Any = None) -> None:
        if not isinstance(column, str) or not column:
            raise invalid_argument("column", column, "a column name")
        if kind not in ("probabilities", "logits", "labels"):
            raise invalid_argument("kind", kind, "one of ('probabilities', 'logits', 'labels')")
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise invalid_argument("n_classes", n_classes, "an integer >= 2")
        self.column = column
        self.name = name or column
        self.n_classes = int(n_classes)
        self.output = kind
        self.access = Access.LABELS if kind == "labels" else Access.PROBABILITIES
        self.classes = None if classes is None else tuple(str(c) for c in classes)

    def predict(self, X: Any) -> np.ndarray:
        raise invalid_argument("model", self.name, "a model run through an executor over a ParquetSource "
                                                    "(a ColumnModel's outputs are a column of the data)")

    def fingerprint(self) -> str:
        return hashlib.sha256(f"column:{self.column}:{self.output}:{self.n_classes}".encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(column=self.column, output=self.output)
        return d

    def bind(self, values: np.ndarray) -> ModelAdapter:
        """This model's adapter for one unit: the unit's column, row-aligned."""
        from kdaudit.models._precomputed import PrecomputedModel

        fp = self.fingerprint()

        class _Bound(PrecomputedModel):
            kind = "column"

            def fingerprint(self) -> str:
                return fp

        return _Bound(values, name=self.name, kind=self.output, classes=self.classes)


def _fs_and_paths(paths: Any, filesystem: Any) -> tuple[Any, list[str]]:
    """A pyarrow filesystem and the sorted parquet files that ``paths`` names (files, directories, globs, URIs)."""
    import pyarrow.fs as pafs

    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise invalid_argument("paths", paths, "at least one parquet file, directory or glob")
    fs = filesystem
    out: list[str] = []
    for item in items:
        s = os.fspath(item)
        if "://" in s:  # object-store URI (s3://, gs://, hdfs://, file://): pyarrow resolves the filesystem
            item_fs, path = pafs.FileSystem.from_uri(s)
            fs = fs or item_fs
        else:
            fs = fs or pafs.LocalFileSystem()
            path = os.path.abspath(s)
        if any(ch in path for ch in "*?["):
            if not isinstance(fs, pafs.LocalFileSystem):
                raise invalid_argument("paths", s, "a directory or file URI (globs only on local paths)")
            found = sorted(glob.glob(path))
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                sel = pafs.FileSelector(path, recursive=True)
                found = sorted(f.path for f in fs.get_file_info(sel)
                               if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
            elif info.type == pafs.FileType.File:
                found = [path]
            else:
                raise invalid_argument("paths", s, "an existing parquet file, directory of parquet files or glob")
        if not found:
            raise invalid_argument("paths", s, "a location holding at least one .parquet file")
        out += found
    return fs, out


class ParquetSource:
    """Audit rows in sharded parquet files, read by the workers (local paths or object-store URIs).

    Parameters
    ----------
    paths : str, path, or sequence of them
        Parquet files, directories (every ``.parquet`` below, sorted), local globs, or URIs such as
        ``s3://bucket/audit/`` (pyarrow's filesystems; credentials from the environment, as pyarrow reads them).
    features : sequence of str or str, optional
        Input columns (stacked into a float32 matrix), or one list column. None: no inputs (every model is a
        :class:`ColumnModel`).
    label : str, optional
        True class index column.
    ids : str
        Sample id column (fixes each row's bootstrap block; must be unique over all files).
    sensitive : sequence of str
        Sensitive feature columns (values are read as group names).
    classes : sequence of str, optional
    name : str, optional
    block_rows : int, optional
        Row groups are gathered into units of at most this many rows (a unit never splits a row group). Default:
        one row group per unit.
    filesystem : pyarrow.fs.FileSystem, optional
        Overrides the filesystem inferred from the paths.
    """

    kind = "parquet"

    def __init__(self, paths: Any, *, features: Any = None, label: str | None = None, ids: str = "id",
                 sensitive: Sequence[str] = (), classes: Any = None, name: str | None = None,
                 block_rows: int | None = None, filesystem: Any = None) -> None:
        import pyarrow.parquet as pq

        self.filesystem, self.files = _fs_and_paths(paths, filesystem)
        self.features = [features] if isinstance(features, str) else (None if features is None else list(features))
        self.label, self.ids, self.sensitive = label, ids, [str(c) for c in sensitive]
        self.classes = None if classes is None else tuple(str(c) for c in classes)
        self.block_rows = None if block_rows is None else _check_block_rows(block_rows)
        self._name = name or os.path.basename(os.path.normpath(self.files[0] if len(self.files) == 1
                                                               else os.path.dirname(self.files[0])))
        wanted = ([ids] + ([label] if label else []) + self.sensitive + (self.features or []))
        self.units: list[tuple[int, tuple[int, ...]]] = []
        self._n_rows = 0
        for i, path in enumerate(self.files):
            meta = pq.ParquetFile(path, filesystem=self.filesystem).metadata  # the footer only
            names = set(meta.schema.names)
            missing = [c for c in wanted if c not in names]
            if missing:
                raise invalid_argument("ParquetSource columns", missing[0],
                                       f"a column of {os.path.basename(path)} ({sorted(names)})")
            group: list[int] = []
            rows = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if group and (self.block_rows is None or rows + n > self.block_rows):
                    self.units.append((i, tuple(group)))
                    group, rows = [], 0
                group.append(g)
                rows += n
            if group:
                self.units.append((i, tuple(group)))
            self._n_rows += meta.num_rows
        if self._n_rows == 0:
            raise invalid_argument("paths", paths, "parquet files with at least one row")

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def name(self) -> str:
        return self._name

    @property
    def has_labels(self) -> bool:
        return self.label is not None

    @property
    def sensitive_names(self) -> list[str]:
        return list(self.sensitive)

    def load(self, unit: tuple[int, tuple[int, ...]], columns: Sequence[str] = ()) -> Block:
        import pyarrow.parquet as pq

        i, groups = unit
        read = [self.ids] + ([self.label] if self.label else []) + self.sensitive + (self.features or [])
        read += [c for c in columns if c not in read]
        table = pq.ParquetFile(self.files[i], filesystem=self.filesystem).read_row_groups(list(groups), columns=read)
        ids = table.column(self.ids).to_numpy()
        if ids.dtype == object:
            ids = ids.astype(str)
        if self.features is None:
            X: Any = np.arange(len(ids))  # no inputs: column models read their rows by position
        elif len(self.features) == 1 and _is_list(table.schema.field(self.features[0]).type):
            X = _list_matrix(table.column(self.features[0]), self.features[0]).astype(np.float32, copy=False)
        else:
            X = np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in self.features])
        y = None if self.label is None else table.column(self.label).to_numpy()
        sens = None
        if self.sensitive:
            sens = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False).astype(str) for c in self.sensitive})
        data = AuditData(X=X, y_true=y, sensitive=sens, ids=ids, classes=self.classes, name=self._name,
                         source=self.describe_files())
        cols = {c: _column_values(table.column(c), c) for c in columns}
        h = hashlib.sha256(data.fingerprint().encode())
        for c in sorted(cols):
            h.update(f"|{c}|{hash_array_like(cols[c])}".encode())
        return Block(data, cols, h.hexdigest())

    def fingerprint(self, unit_hashes: Sequence[str]) -> str:
        """sha256 over the units' hashes in unit order (each covers the unit's ids, labels, groups, inputs and
        output columns), so a worker hashes its own rows and the driver never reads them."""
        h = hashlib.sha256(b"kdaudit-parquet-units-1")
        for u in unit_hashes:
            h.update(u.encode())
        return h.hexdigest()

    def summary(self, merged: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self._name, "source": self.describe_files(), "n_rows": self._n_rows,
                               "sha256": merged["sha256"],
                               "classes": list(self.classes) if self.classes is not None else None}
        if self.label is not None:
            out["class_counts"] = merged["class_counts"]
        if self.sensitive:
            out["groups"] = merged["groups"]
        return out

    def head(self) -> AuditData:
        """The first unit's rows, which the driver may use itself (cost timing)."""
        return self.load(self.units[0]).data

    def describe_files(self) -> str:
        return f"{len(self.files)} parquet file(s) under {os.path.commonpath(self.files) if len(self.files) > 1 else self.files[0]}"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": len(self.files), "units": len(self.units), "block_rows": self.block_rows}


def _is_list(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t)


def _list_matrix(col: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    if n == 0 or flat.size % n:
        raise invalid_argument(f"column {name!r}", f"{flat.size} values over {n} rows", "the same length per row")
    return flat.reshape(n, flat.size // n)


def _column_values(col: Any, name: str) -> np.ndarray:
    if _is_list(col.type):
        return _list_matrix(col, name)
    return col.to_numpy(zero_copy_only=False)
