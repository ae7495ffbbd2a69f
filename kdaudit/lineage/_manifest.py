"""Lineage manifests: the record of a documented distillation, and its verification against a student file.

A distillation that is meant to be audited later (the review-gate case) is recorded when it happens: the sha256 of
each teacher, of the student, of the training data, and the distillation settings. ``kdaudit lineage --verify``
later checks that a student file is the one the record describes. The manifest proves identity, not lineage: it
binds a student file to declared teachers and settings. Anyone who can edit the file can edit the record, so the
manifest also carries a hash of its own content, which detects accidental edits; sign or store it where it cannot be
changed when tampering is a concern.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdaudit._exceptions import invalid_argument
from kdaudit._io import atomic_write_text, canonical_json

__all__ = ["MANIFEST_SCHEMA", "VerifyResult", "read_manifest", "verify_manifest", "write_manifest"]

MANIFEST_SCHEMA = "kdaudit.lineage-manifest/1"


def _describe(obj: Any, role: str, trust: bool = False) -> dict[str, Any]:
    """Identity of a model given as a file path or as an adapter/wrappable model."""
    from kdaudit.models import as_model, load_model
    from kdaudit.models._hashing import sha256_file

    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if not p.is_file():
            raise invalid_argument(role, str(obj), "an existing model file or a model object")
        entry: dict[str, Any] = {"file": p.name, "file_sha256": sha256_file(p), "size_bytes": p.stat().st_size}
        try:  # the weights' hash survives re-saving in another container; optional, as loading may need an arch
            entry["weights_sha256"] = load_model(p, trust=trust).fingerprint()
        except Exception:  # noqa: BLE001 - any loading failure just leaves the weights hash out
            entry["weights_sha256"] = None
        return entry
    model = as_model(obj)
    return {"file": None, "file_sha256": None, "size_bytes": model.size_bytes(), "weights_sha256": model.fingerprint(),
            "kind": model.kind}


def _content_hash(doc: Mapping[str, Any]) -> str:
    import hashlib

    body = {k: v for k, v in doc.items() if k != "content_sha256"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def write_manifest(path: str | os.PathLike[str], *, teachers: Mapping[str, Any], student: Any,
                   distill_settings: Mapping[str, Any], data_sha256: str,
                   extra: Mapping[str, Any] | None = None, trust: bool = False) -> Path:
    """Write a lineage manifest (canonical JSON, written atomically).

    Parameters
    ----------
    path : path
        Where to write, e.g. next to the report: ``out/lineage_manifest.json``.
    teachers : dict of name -> model file path or model object
    student : model file path or model object
        Give the file that will be shipped: ``--verify`` compares files.
    distill_settings : dict
        JSON-able settings (temperature, alpha, epochs, lr, seed, ...).
    data_sha256 : str
        Hash of the distillation data (``AuditData.fingerprint()``).
    extra : dict, optional
        Anything else to record (owner, ticket, report path).
    trust : bool
        The model files are your own: their weights may be read even from formats that run code when loaded
        (TorchScript, torch.export, pickle), to record ``weights_sha256``. Untrusted, such files get only their
        file hash.

    Returns
    -------
    Path
    """
    from kdaudit._version import __version__

    if not isinstance(teachers, Mapping) or not teachers:
        raise invalid_argument("teachers", teachers, "a non-empty dict name -> model file or model")
    if not isinstance(data_sha256, str) or len(data_sha256) != 64:
        raise invalid_argument("data_sha256", data_sha256, "a sha256 hex digest (64 characters)")
    if not isinstance(distill_settings, Mapping):
        raise invalid_argument("distill_settings", distill_settings, "a dict of settings")
    doc: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "kdaudit_version": __version__,
        "teachers": {str(k): _describe(v, f"teachers[{k!r}]", trust) for k, v in teachers.items()},
        "student": _describe(student, "student", trust),
        "distill_settings": dict(distill_settings),
        "data_sha256": data_sha256,
        "extra": dict(extra or {}),
    }
    doc["content_sha256"] = _content_hash(json.loads(canonical_json(doc)))
    return atomic_write_text(path, canonical_json(doc))


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a manifest; raise naming the problem if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise invalid_argument("manifest", str(path), "an existing lineage manifest file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise invalid_argument("manifest", str(path), f"a JSON lineage manifest ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA or "student" not in doc:
        raise invalid_argument("manifest", str(path), f"a manifest with schema {MANIFEST_SCHEMA!r}")
    return doc


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_manifest`.

    ``status`` is "match" when the student file is the recorded one (same bytes, or same weights in another file)
    and the manifest is intact; "mismatch" otherwise. ``checks`` lists each check with its outcome.
    """

    status: str
    manifest: str
    student_file: str
    checks: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == "match"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "manifest": self.manifest, "student_file": self.student_file,
                "checks": [dict(c) for c in self.checks]}

    def summary(self) -> str:
        lines = [f"lineage manifest {self.manifest}: {self.status.upper()} for {self.student_file}"]
        lines += [f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}" for c in self.checks]
        return "\n".join(lines)


def verify_manifest(path: str | os.PathLike[str], student_file: str | os.PathLike[str], *,
                    teachers: Mapping[str, Any] | None = None, trust_student: bool = False,
                    trust_teachers: bool = False) -> VerifyResult:
    """Check a student file (and optionally teacher files) against a manifest.

    Parameters
    ----------
    path : path
        The manifest.
    student_file : path
    teachers : dict of name -> file, optional
        Teacher files to check against the recorded hashes too.
    trust_student, trust_teachers : bool
        When a file's bytes differ from the record, its weights are read to compare them; these allow the student's
        (the teachers') file to be in a format that runs code when loaded (see :func:`kdaudit.load_model`).
        Untrusted, such a file is reported as not matching, and nothing in it runs.

    Returns
    -------
    VerifyResult
    """
    doc = read_manifest(path)
    checks: list[dict[str, Any]] = []
    intact = doc.get("content_sha256") == _content_hash(doc)
    checks.append({"check": "manifest intact", "ok": intact,
                   "detail": "content hash matches" if intact else "content hash differs: the manifest was edited"})
    checks.append(_compare("student", doc["student"], student_file, trust_student,
                           "--trust-student (trust_student=True in Python)"))
    for name, file in (teachers or {}).items():
        if name not in doc.get("teachers", {}):
            checks.append({"check": f"teacher {name}", "ok": False,
                           "detail": f"not in the manifest (recorded: {sorted(doc.get('teachers', {}))})"})
        else:
            checks.append(_compare(f"teacher {name}", doc["teachers"][name], file, trust_teachers,
                                   "--trust-manifest-teachers (trust_teachers=True in Python)"))
    status = "match" if all(c["ok"] for c in checks) else "mismatch"
    return VerifyResult(status=status, manifest=str(path), student_file=str(student_file), checks=tuple(checks))


def _compare(label: str, recorded: Mapping[str, Any], file: str | os.PathLike[str], trust: bool, hint: str
             ) -> dict[str, Any]:
    from kdaudit.models._hashing import sha256_file

    p = Path(file)
    if not p.is_file():
        raise invalid_argument("student_file" if label == "student" else label, str(file), "an existing file")
    digest = sha256_file(p)
    if recorded.get("file_sha256") and digest == recorded["file_sha256"]:
        return {"check": label, "ok": True, "detail": f"file sha256 {digest[:16]}... matches"}
    if recorded.get("weights_sha256"):
        try:
            from kdaudit.models import load_model

            weights = load_model(p, trust=trust, _trust_hint=hint).fingerprint()
        except Exception as exc:  # noqa: BLE001 - an unloadable file cannot match recorded weights
            return {"check": label, "ok": False,
                    "detail": f"file sha256 {digest[:16]}... differs and the weights could not be read ({exc})"}
        if weights == recorded["weights_sha256"]:
            return {"check": label, "ok": True,
                    "detail": f"weights sha256 {weights[:16]}... match (the file itself differs)"}
        return {"check": label, "ok": False, "detail": f"file sha256 {digest[:16]}... and weights sha256 "
                f"{weights[:16]}... differ from the record"}
    return {"check": label, "ok": False, "detail": f"file sha256 {digest[:16]}... differs from the recorded "
            f"{str(recorded.get('file_sha256'))[:16]}..."}
