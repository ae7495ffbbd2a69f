"""Atomic file writes and canonical JSON: nothing is half written, the same result gives the same bytes."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["OUTPUT_SET", "READ_LIMITS", "ReadLimits", "atomic_write_bytes", "atomic_write_text", "canonical_json",
           "read_arrays", "read_table", "read_yaml_file", "recorded_path", "to_jsonable", "write_file_set"]

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


def recorded_path(path: str | os.PathLike[str]) -> str:
    """How a file's location is written into a result: relative to the working directory when it lies under it.

    A result records where its inputs came from, but an absolute path also records where the repository was checked
    out: the same audit run from two checkouts would differ in those keys alone. Paths under the working directory
    are therefore written relative to it (POSIX separators); others as given.
    """
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(Path.cwd()).as_posix()
        except (ValueError, OSError):
            return str(p)
    return p.as_posix()


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
    except (UnicodeDecodeError, OSError, RecursionError) as exc:  # binary, unreadable, or nested beyond reason
        raise ConfigError(f"{what} {str(path)!r} could not be read as UTF-8 YAML: {type(exc).__name__}") from None


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


# -- a set of output files replaced as one --------------------------------------------------------------------------
#: Files that belong to one audit's output set: a new set replaces all of them, so none is left from an older run.
OUTPUT_SET = ("results.json", "run.json", "report.html", "summary.md")


def write_file_set(out_dir: str | os.PathLike[str], files: dict[str, bytes]) -> dict[str, Path]:
    """Replace the output set in ``out_dir`` by ``files`` (name -> bytes) as one: readers see the old set or the new.

    The files are written and fsynced into a temporary folder beside ``out_dir`` (same file system), which then takes
    ``out_dir``'s place in one ``rename`` (an atomic exchange on Linux). Anything else in ``out_dir`` (models, a
    manifest, a cache) is moved into the new folder; should the process die between the exchange and that move,
    the next write moves them back. Writers into the same parent folder take turns (an exclusive lock on it), so
    two audits saving into one folder cannot interleave.
    """
    out = Path(out_dir)
    if out.is_symlink():  # replace the folder the link points to, not the link
        out = out.resolve()
    for name in files:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"output file name {name!r} must be a plain file name")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    with _DirLock(parent):
        _recover(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.kdaudit-new-", dir=parent))
        try:
            for name, data in files.items():
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp / name, 0o666 & ~_umask())
            os.chmod(tmp, 0o777 & ~_umask())
            _fsync_dir(tmp)
            if not out.exists():
                os.rename(tmp, out)
            else:
                if not out.is_dir():
                    raise NotADirectoryError(f"output folder {str(out)!r} exists and is not a folder")
                old = tmp.with_name(tmp.name.replace("-new-", "-old-"))
                if _exchange(tmp, out):
                    os.rename(tmp, old)  # tmp now holds the previous set
                else:  # no atomic exchange here: a crash between these two renames is repaired by _recover
                    os.rename(out, old)
                    os.rename(tmp, out)
                _recover(out)  # carries the other files over, then deletes the old set
            _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {name: out / name for name in files}


def _recover(out: Path) -> None:
    """Move what a previous write left in ``.<name>.kdaudit-old-*`` folders (files not in the output set) into
    ``out``, and restore a folder whose replacement was interrupted."""
    for old in sorted(out.parent.glob(f".{out.name}.kdaudit-old-*")):
        if not out.exists():
            os.rename(old, out)  # the new set never arrived: the previous one is still whole
            continue
        for entry in old.iterdir():
            target = out / entry.name
            if entry.name not in OUTPUT_SET and not target.exists():
                os.rename(entry, target)
        shutil.rmtree(old, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.kdaudit-new-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a set that was being written when a process died


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return rc == 0


class _DirLock:
    """An exclusive advisory lock on a folder (released when the holder exits, even by kill -9)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> _DirLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return self
        self.fd = os.open(self.folder, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not possible everywhere
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
