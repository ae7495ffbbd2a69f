"""Atomic file writes and canonical JSON: nothing is half written, the same result gives the same bytes."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["READ_LIMITS", "ReadLimits", "atomic_write_bytes", "atomic_write_text", "canonical_json", "read_arrays",
           "read_table", "read_yaml_file", "to_jsonable"]

# Floats are written with 12 significant digits: far below any interval's width, and it keeps results.json
# byte-identical when the last bits of a sum differ between BLAS builds.
_SIG_DIGITS = 12


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, dataclasses with ``to_dict`` and NaN/inf to plain JSON values."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    # numpy is not imported for this: ``kdaudit gate`` starts without it, and if numpy is not loaded no numpy
    # value can exist
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, bool) or (np is not None and isinstance(obj, np.bool_)):
        return bool(obj)
    if isinstance(obj, int) or (np is not None and isinstance(obj, np.integer)):
        return int(obj)
    if isinstance(obj, float) or (np is not None and isinstance(obj, np.floating)):
        x = float(obj)
        if math.isnan(x) or math.isinf(x):
            return None
        return float(f"{x:.{_SIG_DIGITS}g}")
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, fixed float precision, trailing newline."""
    return json.dumps(to_jsonable(obj), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600; give the result the mode an ordinary open() would (0666 minus umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_yaml_file(path: str | os.PathLike[str], *, what: str, expected: str) -> Any:
    """Parse a YAML file safely (no Python tags); a missing or malformed file raises ConfigError naming ``what``."""
    import yaml

    from kdaudit._exceptions import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist; expected {expected}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None


# -- bounded reads of tables and arrays from untrusted files ------------------------------------------------------
class ReadLimits:
    """Most rows and bytes one table or array file may expand to in memory.

    A compressed file can expand a thousandfold (a 1 MB parquet file holding 50 M rows), so sizes are checked from
    the file's own metadata before anything is decompressed. Raise the limits with the environment variables
    ``KDAUDIT_MAX_ROWS`` and ``KDAUDIT_MAX_BYTES``, or by setting the attributes of :data:`READ_LIMITS`.
    """

    def __init__(self) -> None:
        self.max_rows = int(os.environ.get("KDAUDIT_MAX_ROWS", 20_000_000))
        self.max_bytes = int(os.environ.get("KDAUDIT_MAX_BYTES", 8 * 1024**3))

    def check(self, path: Path, *, rows: int | None = None, nbytes: int | None = None, what: str = "file") -> None:
        from kdaudit._exceptions import KDAuditError

        if rows is not None and rows > self.max_rows:
            raise KDAuditError(f"{what} {str(path)!r} holds {rows:,} rows, over the limit of {self.max_rows:,} "
                               "(set KDAUDIT_MAX_ROWS to raise it if the file is genuine)")
        if nbytes is not None and nbytes > self.max_bytes:
            raise KDAuditError(f"{what} {str(path)!r} expands to {nbytes:,} bytes, over the limit of "
                               f"{self.max_bytes:,} (set KDAUDIT_MAX_BYTES to raise it if the file is genuine)")


READ_LIMITS = ReadLimits()


def read_table(path: str | os.PathLike[str], *, what: str = "table file") -> Any:
    """A ``.csv`` or ``.parquet`` file as a DataFrame, within :data:`READ_LIMITS`; failures raise KDAuditError."""
    import pandas as pd

    from kdaudit._exceptions import KDAuditError

    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(p).metadata  # footer only: nothing is decompressed yet
            nbytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            READ_LIMITS.check(p, rows=meta.num_rows, nbytes=nbytes, what=what)
            return pd.read_parquet(p)
        if suffix == ".csv":
            READ_LIMITS.check(p, nbytes=p.stat().st_size, what=what)
            frame = pd.read_csv(p, nrows=READ_LIMITS.max_rows + 1)
            READ_LIMITS.check(p, rows=len(frame), what=what)
            return frame
    except KDAuditError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, ImportError, TypeError) as exc:
        # pandas' parser errors and pyarrow's ArrowInvalid are ValueErrors
        raise KDAuditError(f"{what} {str(p)!r} could not be read as {suffix}: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:300]}") from None
    raise KDAuditError(f"{what} {str(p)!r} has suffix {suffix!r}; expected .csv or .parquet")


def read_arrays(path: str | os.PathLike[str], *, what: str = "array file") -> dict[str, np.ndarray]:
    """The arrays of an ``.npy`` (under the key ``""``) or ``.npz`` file, without pickle and within
    :data:`READ_LIMITS`; failures raise KDAuditError."""
    import zipfile

    import numpy as np

    from kdaudit._exceptions import KDAuditError

    p = Path(path)
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:  # declared sizes: a zip bomb is refused before it is inflated
                READ_LIMITS.check(p, nbytes=sum(i.file_size for i in zf.infolist()), what=what)
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        READ_LIMITS.check(p, nbytes=p.stat().st_size, what=what)
        return {"": np.load(p, allow_pickle=False)}
    except KDAuditError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as exc:
        # not an array file, corrupt, or object (pickled) arrays, which allow_pickle=False refuses
        raise KDAuditError(f"{what} {str(p)!r} could not be read as .npy/.npz of plain arrays: "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
