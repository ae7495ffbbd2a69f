"""The audit configuration file (YAML): schema, validation with key paths, and building models and data from it.

Example (paths are relative to the config file)::

    name: credit-model-review
    models:
      teacher:                       # one model, or a list of models (an ensemble: mean of their probabilities)
        - {path: models/teacher_a.pt, arch: mlp, arch_kwargs: {in_features: 91, n_classes: 2}}  # a registered arch
        - models/teacher_b.onnx
      students:
        - {path: models/student.skops, name: student}
        - {path: outputs/suspect_probs.npz, kind: probabilities}   # precomputed outputs (.npy/.npz/.csv/.parquet)
        - {path: models/vendor.onnx, access: labels, query_budget: 5000}   # audited as a labels-only black box
      references: [models/ref_seed1.pt, models/ref_seed2.pt]   # optional: lineage references
      controls: [models/cnn_seed1.pt, models/cnn_seed2.pt]   # optional: lineage negative controls (not derived)
      positive_controls: [models/own_student1.pt]   # optional: students made from the teacher (the test's power)
    data:
      dataset: adult                 # bundled: adult, digits, mnist5k; or `path:` to .npz/.csv/.parquet
      split: test
      rows: 5000                     # optional: the first N rows
    probes:                          # optional lineage probes (default: the data); one spec or a list, concatenated
      - {dataset: adult, split: train, rows: 2000}
      - data/public_rows.parquet     # e.g. public data a student's maker may have queried the teacher with
    sensitive: [sex, race]           # optional: a subset of the data's sensitive features
    sections: [agreement, calibration, bias, fingerprint, cost]
    seed: 0
    bootstrap: {replicates: 1000, level: 0.95}
    policy: policy.yaml              # a file, an inline {rules: [...]}, or "default"

A language-model audit (``task: lm``)::

    task: lm
    models:
      teacher: models/teacher-gpt                # a local Hugging Face directory (safetensors, tokenizer)
      students:
        - {path: models/student-gpt, name: student}
        - {path: models/control-gpt, name: control, role: control}
        - {endpoint: "http://127.0.0.1:8000/v1", model: small, name: vendor, api: chat, access: text,
           max_prompts: 500, api_key_env: VENDOR_API_KEY}           # an OpenAI-compatible endpoint
        - {path: outputs/suspect.jsonl, name: suspect}              # precomputed outputs (.jsonl/.parquet)
    data:                                        # one prompt set of texts and/or one multiple-choice set
      - {path: prompts.jsonl, groups: [topic]}   # or {corpus: stdlib, kind: continuations, n: 120}
      - {corpus: stdlib, kind: choices, n: 100}
    section_options: {lm_tokens: {top_k: 20}, lm_generation: {max_new_tokens: 24}}
    device: cpu                                  # device, precision and batch_size of the local models
    cache_dir: cache                             # outputs and endpoint answers, kept for resume
    policy: default                              # the language-model default policy

``arch`` names an architecture registered with :func:`kdaudit.models.register_architecture` (built in: ``mlp``,
``small_cnn``); an import path ``"package.module:callable"`` is accepted only on a model with ``trust: true``, which
also allows that model's file to be in a format that runs code on load (pickle, TorchScript, torch.export).

Every error is a :class:`~kdaudit.ConfigError` that names the key path (``models.students[1].path``), the value and
what is accepted; an unknown key gets a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kdaudit._exceptions import ConfigError, KDAuditError, key_error
from kdaudit._exceptions import did_you_mean as _did_you_mean
from kdaudit._io import read_arrays, read_table, read_yaml_file
from kdaudit._validation import encode_labels
from kdaudit.policy import load_policy

__all__ = [
    "ALL_SECTIONS",
    "AuditConfig",
    "DATASETS",
    "DataSpec",
    "LMAuditConfig",
    "LMModelSpec",
    "ModelSpec",
    "PromptSpec",
    "load_config",
]

ALL_SECTIONS = ("agreement", "calibration", "bias", "fingerprint", "cost", "lineage")
DEFAULT_SECTIONS = ("agreement", "calibration", "bias", "fingerprint", "cost")
DATASETS = ("adult", "digits", "mnist5k")
ACCESS = ("probabilities", "labels")  # lineage.suspect_access; "top_k:K" is also accepted
DATA_SUFFIXES = (".npz", ".csv", ".parquet")

_TOP_KEYS = ("task", "name", "models", "data", "probes", "sensitive", "sections", "seed", "bootstrap", "batch_size",
             "device", "precision", "cache_dir", "policy", "out", "lineage", "section_options", "executor")
_MODELS_KEYS = ("teacher", "students", "references", "controls", "positive_controls")
_MODEL_KEYS = ("path", "name", "kind", "trust", "arch", "arch_kwargs", "output", "access", "query_budget", "options",
               "role")
_DATA_KEYS = ("dataset", "split", "flat", "path", "features", "label", "sensitive", "id", "classes", "rows", "name")
_BOOTSTRAP_KEYS = ("replicates", "level", "blocks")
# load_model's adapter arguments a config may pass through ``options`` (the others have their own model keys)
_MODEL_OPTION_KEYS = ("device", "precision", "n_classes", "classes", "output_name", "id_column")
# where the audit runs (kdaudit.executors); never recorded in results.json, which must not depend on it
_EXECUTOR_KEYS = ("kind", "address", "num_actors", "num_cpus_per_actor", "num_gpus_per_actor", "batch_size",
                  "block_rows", "runtime_env", "max_restarts", "max_task_retries")
_LINEAGE_KEYS = ("alpha", "query_budget", "suspect_access", "n_probes", "p_value_method", "controls_mode")


# --------------------------------------------------------------------------------------------------- validation
class _Ctx:
    """Where the config came from, so every message can say which file and resolve relative paths."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def error(self, path: str, value: Any, accepted: str) -> ConfigError:
        return key_error(self.source, "config key", path, value, accepted)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...], what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, value, what)
        for key in value:
            if key not in allowed:
                raise self.error(_join(path, key), value[key], f"no such key; accepted keys here: "
                                 f"{', '.join(allowed)}{_did_you_mean(str(key), allowed)}")
        return value

    def str_(self, value: Any, path: str, what: str = "a string") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, value, what)
        return value

    def int_(self, value: Any, path: str, *, minimum: int, what: str | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(path, value, what or f"an integer >= {minimum}")
        return int(value)

    def bool_(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, value, "true or false")
        return value

    def str_list(self, value: Any, path: str, what: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(path, value, what)
        return tuple(value)

    def file(self, value: Any, path: str, what: str) -> Path:
        text = self.str_(value, path, what)
        p = Path(os.path.expanduser(text))
        if not p.is_absolute():
            p = self.base_dir / p
        if not p.exists():
            raise self.error(path, value, f"{what} that exists (looked for {str(p)!r})")
        return p


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ------------------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ModelSpec:
    """One model file and the options :func:`kdaudit.load_model` needs for it."""

    path: Path
    name: str | None = None
    kind: str | None = None
    trust: bool = False
    arch: str | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    output: str | None = None
    access: str | None = None
    query_budget: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    role: str | None = None  # students only: "control" reports it beside the students without judging it
    key: str = field(default="", compare=False)  # where in the config it was declared, for messages

    def load(self) -> Any:
        """Load the model through :func:`kdaudit.models.load_model` (safe by default; ``trust`` allows the formats
        that run code on load, and an ``arch`` import path, for this one model)."""
        from kdaudit.models import load_model

        kwargs: dict[str, Any] = dict(self.options)
        if self.kind is not None:
            kwargs["kind"] = self.kind
        if self.arch is not None:
            kwargs["arch"] = self.arch
            kwargs["arch_kwargs"] = dict(self.arch_kwargs)
        if self.output is not None:
            kwargs["output"] = self.output
        hint = f"'trust: true' under config key {self.key!r}" if self.key else "'trust: true' on the model"
        model = load_model(self.path, name=self.name, trust=self.trust, _trust_hint=hint, **kwargs)
        if self.access is None and self.query_budget is None:
            return model
        return restrict_access(model, self.access or "probabilities", query_budget=self.query_budget)

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"path": _rel(self.path, base_dir)}
        for k in ("name", "kind", "arch", "output", "access", "query_budget", "role"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.trust:
            d["trust"] = True
        if self.arch_kwargs:
            d["arch_kwargs"] = dict(self.arch_kwargs)
        if self.options:
            d["options"] = dict(self.options)
        return d


def _rel(p: Path, base: Path | None) -> str:
    # Recorded paths are relative to the config file so that results.json does not depend on where it was checked out.
    if base is not None:
        try:
            return Path(os.path.relpath(p, base)).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def _access_ok(value: Any) -> bool:
    return value in ACCESS or (isinstance(value, str) and value.startswith("top_k:") and value[6:].isdigit()
                               and int(value[6:]) > 0)


def restrict_access(model: Any, access: str, *, query_budget: int | None = None) -> Any:
    """Serve ``model`` as a black box that reveals only ``access`` ("probabilities", "top_k:K" or "labels") and
    answers at most ``query_budget`` rows: what an auditor sees of a suspect behind an API."""
    from kdaudit.models._convert import keep_top_k
    from kdaudit.models import BlackBoxModel
    from kdaudit.models._convert import to_probabilities

    mode, _, k = access.partition(":")
    top_k = int(k) if mode == "top_k" else None
    n_classes = model.n_classes

    def answer(X: Any) -> Any:
        p = to_probabilities(model.predict(X), model.output, n_classes)
        if mode == "labels":
            return p.argmax(axis=1)
        if mode == "top_k":
            p = keep_top_k(p, top_k)  # each row's k largest probabilities, zero elsewhere (as distillation sees)
        return p

    box = BlackBoxModel(answer, n_classes=n_classes, name=model.name, access=mode, top_k=top_k,
                        query_budget=query_budget, classes=model.classes,
                        fingerprint=f"{model.fingerprint()}:{access}")
    box.inner = model  # the model behind the restricted interface (for provenance)
    return box


@dataclass(frozen=True)
class DataSpec:
    """Where the audit rows come from: a bundled dataset or a file."""

    dataset: str | None = None
    split: str = "test"
    flat: bool = False
    path: Path | None = None
    features: tuple[str, ...] | None = None
    label: str | None = None
    sensitive: tuple[str, ...] | None = None
    id: str | None = None
    classes: tuple[str, ...] | None = None
    rows: int | None = None
    name: str | None = None

    def load(self) -> Any:
        """Build the :class:`~kdaudit.AuditData`."""
        data = self._load_full()
        if self.rows is not None and self.rows < len(data):
            data = data.subset(np.arange(self.rows), name=data.name + f" (first {self.rows} rows)")
        return data

    def _load_full(self) -> Any:
        from kdaudit import data as kdata

        if self.dataset == "adult":
            return kdata.load_adult(split=self.split)
        if self.dataset == "digits":
            return kdata.load_digits(flat=self.flat)
        if self.dataset == "mnist5k":
            return kdata.load_mnist5k(flat=self.flat)
        assert self.path is not None
        return load_data_file(self.path, features=self.features, label=self.label, sensitive=self.sensitive,
                              id=self.id, classes=self.classes, name=self.name)

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        if self.dataset is not None:
            d: dict[str, Any] = {"dataset": self.dataset}
            if self.dataset == "adult":
                d["split"] = self.split
            else:
                d["flat"] = self.flat
        else:
            assert self.path is not None
            d = {"path": _rel(self.path, base_dir)}
            for k in ("features", "label", "sensitive", "id", "classes", "name"):
                v = getattr(self, k)
                if v is not None:
                    d[k] = list(v) if isinstance(v, tuple) else v
        if self.rows is not None:
            d["rows"] = self.rows
        return d


def load_data_file(path: str | os.PathLike[str], *, features: tuple[str, ...] | None = None,
                   label: str | None = None, sensitive: tuple[str, ...] | None = None, id: str | None = None,
                   classes: tuple[str, ...] | None = None, name: str | None = None) -> Any:
    """AuditData from ``.npz`` (arrays ``X``, ``y``, ``ids``, ``sensitive_<feature>``, ``classes``) or a table
    (``.csv``/``.parquet``: the ``label``, ``sensitive`` and ``id`` columns; features are the ``features`` columns or
    all the others)."""
    import pandas as pd

    from kdaudit.data import AuditData

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        arrays = _as_config_error(read_arrays, p)
        x_key = "X" if "X" in arrays else "x" if "x" in arrays else None
        if x_key is None:
            raise ConfigError(f"data file {str(p)!r} has arrays {sorted(arrays)}; expected an array named 'X'")
        y_key = label or ("y" if "y" in arrays else "y_true" if "y_true" in arrays else None)
        if label is not None and label not in arrays:
            raise ConfigError(f"data file {str(p)!r} has no array {label!r} (data.label); arrays: {sorted(arrays)}")
        sens_cols = {k[len("sensitive_"):]: arrays[k] for k in sorted(arrays) if k.startswith("sensitive_")}
        if sensitive is not None:
            missing = [s for s in sensitive if s not in sens_cols]
            if missing:
                raise ConfigError(f"data file {str(p)!r} has no array 'sensitive_{missing[0]}' (data.sensitive); "
                                  f"sensitive arrays: {sorted('sensitive_' + k for k in sens_cols)}")
            sens_cols = {k: sens_cols[k] for k in sensitive}
        sens = pd.DataFrame({k: np.asarray(v).astype(str) for k, v in sens_cols.items()}) if sens_cols else None
        if id is not None and id not in arrays:
            raise ConfigError(f"data file {str(p)!r} has no array {id!r} (data.id); arrays: {sorted(arrays)}")
        ids = arrays.get(id or "ids")
        file_classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else None
        return AuditData(X=arrays[x_key], y_true=None if y_key is None else arrays[y_key], sensitive=sens, ids=ids,
                         classes=classes or file_classes, name=name or p.stem, source=str(p.name))
    if suffix in (".csv", ".parquet"):
        frame = _as_config_error(read_table, p)
        named = [c for c in ([label] if label else []) + list(sensitive or ()) + ([id] if id else [])]
        for col in named + list(features or ()):
            if col not in frame.columns:
                raise ConfigError(f"data file {str(p)!r} has no column {col!r}; columns: {list(frame.columns)[:20]}")
        feats = list(features) if features else [c for c in frame.columns if c not in named]
        y = None
        file_classes = classes
        if label:
            try:
                y, names = encode_labels(frame[label].to_numpy(), f"data.label column {label!r}", classes=classes)
            except KDAuditError as exc:
                raise ConfigError(f"data file {str(p)!r}: {exc}") from None
            file_classes = names or classes
        text = [str(c) for c in feats if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:
            raise ConfigError(f"data file {str(p)!r} has non-numeric feature columns {text[:5]}; expected numeric "
                              "features (list text columns such as group names under data.sensitive, or choose the "
                              "features with data.features)")
        X = frame[feats].to_numpy(dtype=np.float32)
        sens = frame[list(sensitive)].astype(str) if sensitive else None
        ids = frame[id].to_numpy() if id else None
        return AuditData(X=X, y_true=y, sensitive=sens, ids=ids, classes=file_classes, name=name or p.stem,
                         source=str(p.name))
    raise ConfigError(f"data file {str(p)!r} has suffix {suffix!r}; expected one of {', '.join(DATA_SUFFIXES)}")


def _as_config_error(read: Any, p: Path) -> Any:
    try:
        return read(p, what="data file")
    except ConfigError:
        raise
    except KDAuditError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class AuditConfig:
    """A validated audit configuration (see the module docstring for the YAML shape)."""

    teacher: tuple[ModelSpec, ...]
    students: tuple[ModelSpec, ...]
    data: DataSpec
    references: tuple[ModelSpec, ...] = ()
    controls: tuple[ModelSpec, ...] = ()
    positive_controls: tuple[ModelSpec, ...] = ()
    probes: tuple[DataSpec, ...] = ()
    sensitive: tuple[str, ...] | None = None
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    seed: int = 0
    n_replicates: int = 1000
    level: float = 0.95
    n_blocks: int | None = None
    batch_size: int = 256
    device: str = "cpu"
    precision: str | None = None
    cache_dir: Path | None = None
    policy: Any = None
    out: Path | None = None
    name: str | None = None
    lineage: Mapping[str, Any] = field(default_factory=dict)
    executor: Mapping[str, Any] = field(default_factory=dict)
    section_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""
    base_dir: Path = field(default_factory=Path.cwd)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as recorded in results.json (paths relative to the config file, no machine paths)."""
        b = self.base_dir
        d: dict[str, Any] = {
            "models": {
                "teacher": [m.to_dict(b) for m in self.teacher],
                "students": [m.to_dict(b) for m in self.students],
            },
            "data": self.data.to_dict(b),
            "sections": list(self.sections),
            "seed": self.seed,
            "bootstrap": {"replicates": self.n_replicates, "level": self.level},
            "batch_size": self.batch_size,
            "device": self.device,
        }
        if self.n_blocks is not None:
            d["bootstrap"]["blocks"] = self.n_blocks
        if self.references:
            d["models"]["references"] = [m.to_dict(b) for m in self.references]
        if self.controls:
            d["models"]["controls"] = [m.to_dict(b) for m in self.controls]
        if self.positive_controls:
            d["models"]["positive_controls"] = [m.to_dict(b) for m in self.positive_controls]
        if self.probes:
            d["probes"] = [spec.to_dict(b) for spec in self.probes]
        if self.sensitive is not None:
            d["sensitive"] = list(self.sensitive)
        if self.precision is not None:
            d["precision"] = self.precision
        if self.name is not None:
            d["name"] = self.name
        if self.lineage:
            d["lineage"] = dict(self.lineage)
        if self.section_options:
            d["section_options"] = {k: dict(v) for k, v in self.section_options.items()}
        return d

    def bootstrap(self) -> Any:
        from kdaudit.metrics._resampling import Bootstrap

        kw: dict[str, Any] = {"n_replicates": self.n_replicates, "seed": self.seed, "level": self.level}
        if self.n_blocks is not None:
            kw["n_blocks"] = self.n_blocks
        return Bootstrap(**kw)

    def load_model(self, spec: ModelSpec) -> Any:
        """Load one model; its recorded source path is made relative to the config file, so results.json does not
        depend on where the project is checked out."""
        model = spec.load()
        for m in [model, getattr(model, "inner", None)]:
            if m is not None and getattr(m, "source", None):
                m.source = _rel(spec.path, self.base_dir)
        return model

    def load_data(self) -> Any:
        data = self.data.load()
        if self.sensitive is not None:
            if data.sensitive is None:
                raise ConfigError(f"{self.source}: config key 'sensitive' got {list(self.sensitive)}; the data has no "
                                  "sensitive features")
            missing = [s for s in self.sensitive if s not in data.sensitive.columns]
            if missing:
                raise ConfigError(f"{self.source}: config key 'sensitive' got {missing[0]!r}; expected one of the "
                                  f"data's sensitive features {list(data.sensitive.columns)}")
            from kdaudit.data import AuditData

            data = AuditData(X=data.X, y_true=data.y_true, sensitive=data.sensitive[list(self.sensitive)],
                             ids=data.ids, classes=data.classes, name=data.name, source=data.source)
        return data


# ----------------------------------------------------------------------------------------------------- parsing
def _parse_model(value: Any, path: str, ctx: _Ctx) -> ModelSpec:
    if isinstance(value, str):
        value = {"path": value}
    m = ctx.mapping(value, path, _MODEL_KEYS, "a model file path or a mapping with 'path' (and name, kind, trust, "
                    "arch, output, options)")
    if "path" not in m:
        raise ctx.error(_join(path, "path"), None, "the model file (required)")
    p = ctx.file(m["path"], _join(path, "path"), "a model file")
    name = ctx.str_(m["name"], _join(path, "name")) if m.get("name") is not None else None
    kind = None
    if m.get("kind") is not None:
        kind = m["kind"]
        if kind not in ("probabilities", "logits"):
            raise ctx.error(_join(path, "kind"), kind, "'probabilities' or 'logits' (what a precomputed-outputs "
                            "file holds; model files are recognised by their content)")
    trust = ctx.bool_(m.get("trust", False), _join(path, "trust"))
    arch = None
    if m.get("arch") is not None:
        from kdaudit.models._architectures import architecture_names, is_registered

        arch = ctx.str_(m["arch"], _join(path, "arch"), "the name of the architecture a state_dict loads into")
        if not is_registered(arch):
            names = ", ".join(architecture_names())
            if ":" not in arch:
                raise ctx.error(_join(path, "arch"), arch, f"a registered architecture ({names}; register your own "
                                "with kdaudit.models.register_architecture)"
                                + _did_you_mean(arch, architecture_names()))
            if not trust:
                raise ctx.error(_join(path, "arch"), arch, f"a registered architecture ({names}); an import path "
                                "'package.module:callable' runs code named by the config, so it is accepted only "
                                f"with 'trust: true' under {path!r} (or register the architecture with "
                                "kdaudit.models.register_architecture)")
    arch_kwargs = m.get("arch_kwargs") or {}
    if not isinstance(arch_kwargs, Mapping):
        raise ctx.error(_join(path, "arch_kwargs"), arch_kwargs, "a mapping of constructor arguments")
    if arch_kwargs and arch is None:
        raise ctx.error(_join(path, "arch_kwargs"), dict(arch_kwargs), "nothing without 'arch'")
    output = None
    if m.get("output") is not None:
        output = m["output"]
        if output not in ("logits", "probabilities"):
            raise ctx.error(_join(path, "output"), output, "'logits' or 'probabilities'")
    access = None
    if m.get("access") is not None:
        access = m["access"]
        if not _access_ok(access):
            raise ctx.error(_join(path, "access"), access, "'probabilities', 'top_k:K' (K >= 1) or 'labels': what "
                            "the audit may see of this model")
    query_budget = (ctx.int_(m["query_budget"], _join(path, "query_budget"), minimum=1)
                    if m.get("query_budget") is not None else None)
    options = ctx.mapping(m.get("options") or {}, _join(path, "options"), _MODEL_OPTION_KEYS,
                          "a mapping of extra load_model arguments")
    role = _role_of(m, path, ctx)
    return ModelSpec(path=p, name=name, kind=kind, trust=trust, arch=arch, arch_kwargs=dict(arch_kwargs),
                     output=output, access=access, query_budget=query_budget, options=dict(options), key=path,
                     role=role)


def _parse_models(value: Any, path: str, ctx: _Ctx, *, required: bool) -> tuple[ModelSpec, ...]:
    if value is None:
        if required:
            raise ctx.error(path, None, "a model or a list of models (required)")
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ctx.error(path, value, "a non-empty list of models")
    if isinstance(value, list):
        return tuple(_parse_model(v, f"{path}[{i}]", ctx) for i, v in enumerate(items))
    return (_parse_model(value, path, ctx),)


def _parse_data(value: Any, path: str, ctx: _Ctx) -> DataSpec:
    if isinstance(value, str):
        value = {"dataset": value} if value in DATASETS else {"path": value}
    d = ctx.mapping(value, path, _DATA_KEYS, f"a bundled dataset name ({', '.join(DATASETS)}), a data file path, "
                    "or a mapping with 'dataset' or 'path'")
    if ("dataset" in d) == ("path" in d):
        raise ctx.error(path, dict(d), "exactly one of 'dataset' (bundled: " + ", ".join(DATASETS)
                        + ") or 'path' (a .npz/.csv/.parquet file)")
    rows = ctx.int_(d["rows"], _join(path, "rows"), minimum=1) if d.get("rows") is not None else None
    if "dataset" in d:
        ds = d["dataset"]
        if ds not in DATASETS:
            raise ctx.error(_join(path, "dataset"), ds, f"one of {', '.join(DATASETS)}"
                            + _did_you_mean(str(ds), DATASETS, cutoff=0.5))
        for k in ("features", "label", "id", "classes"):
            if k in d:
                raise ctx.error(_join(path, k), d[k], f"nothing: {k!r} applies to data files (path:), not to the "
                                f"bundled dataset {ds!r}")
        split = d.get("split", "test")
        if ds == "adult":
            if split not in ("train", "test"):
                raise ctx.error(_join(path, "split"), split, "'train' or 'test'")
        elif "split" in d:
            raise ctx.error(_join(path, "split"), split, f"nothing: {ds!r} has no split (use 'rows')")
        flat = ctx.bool_(d.get("flat", False), _join(path, "flat"))
        sens = (ctx.str_list(d["sensitive"], _join(path, "sensitive"), "a list of sensitive feature names")
                if d.get("sensitive") is not None else None)
        return DataSpec(dataset=ds, split=split, flat=flat, rows=rows, sensitive=sens)
    p = ctx.file(d["path"], _join(path, "path"), "a data file (.npz, .csv or .parquet)")
    if p.suffix.lower() not in DATA_SUFFIXES:
        raise ctx.error(_join(path, "path"), d["path"], f"a file ending in {', '.join(DATA_SUFFIXES)}")

    def opt_list(k: str) -> tuple[str, ...] | None:
        return ctx.str_list(d[k], _join(path, k), "a list of column names") if d.get(k) is not None else None

    def opt_str(k: str) -> str | None:
        return ctx.str_(d[k], _join(path, k), "a column name") if d.get(k) is not None else None

    for k in ("split", "flat"):
        if k in d:
            raise ctx.error(_join(path, k), d[k], f"nothing: {k!r} applies to bundled datasets only")
    return DataSpec(path=p, features=opt_list("features"), label=opt_str("label"), sensitive=opt_list("sensitive"),
                    id=opt_str("id"), classes=opt_list("classes"), rows=rows,
                    name=ctx.str_(d["name"], _join(path, "name")) if d.get("name") is not None else None)


def _role_of(m: Mapping[str, Any], path: str, ctx: _Ctx) -> str | None:
    """A model entry's ``role``: None, or 'student' / 'control' on an entry of ``models.students``."""
    role = m.get("role")
    if role is not None and (role not in ("student", "control") or not path.startswith("models.students")):
        raise ctx.error(_join(path, "role"), role, "'student' or 'control', on an entry of models.students (a "
                        "control is audited beside the students and not judged)")
    return role


def _seed_and_bootstrap(top: Mapping[str, Any], ctx: _Ctx) -> tuple[int, int, float, int | None]:
    """``seed`` and the ``bootstrap`` block (replicates, level, blocks), checked alike for every kind of audit."""
    seed = ctx.int_(top.get("seed", 0), "seed", minimum=0)
    boot = ctx.mapping(top.get("bootstrap") or {}, "bootstrap", _BOOTSTRAP_KEYS,
                       "a mapping such as {replicates: 1000, level: 0.95}")
    n_rep = ctx.int_(boot.get("replicates", 1000), "bootstrap.replicates", minimum=0)
    level = boot.get("level", 0.95)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ctx.error("bootstrap.level", level, "a confidence level in (0, 1), e.g. 0.95")
    n_blocks = ctx.int_(boot["blocks"], "bootstrap.blocks", minimum=1) if boot.get("blocks") is not None else None
    return seed, n_rep, level, n_blocks


def _directory(top: Mapping[str, Any], key: str, what: str, ctx: _Ctx) -> Path | None:
    """The directory under ``key`` (``~`` expanded, relative to the config file's folder), or None when absent."""
    if top.get(key) is None:
        return None
    path = Path(os.path.expanduser(ctx.str_(top[key], key, what)))
    return path if path.is_absolute() else ctx.base_dir / path


def _policy_value(pv: Any, ctx: _Ctx) -> Any:
    """The ``policy`` key: a file (read through the config's file rule), ``'default'`` or an inline policy."""
    if isinstance(pv, str) and pv != "default":
        return ctx.file(pv, "policy", "a policy YAML file (or 'default', or an inline {rules: [...]})")
    if not isinstance(pv, (str, Mapping, list)):
        raise ctx.error("policy", pv, "a policy YAML file, 'default', or an inline {rules: [...]}")
    return pv


def parse_config(raw: Any, *, source: str = "", base_dir: str | os.PathLike[str] | None = None
                 ) -> AuditConfig | LMAuditConfig:
    """Validate a config mapping (as read from YAML) into an :class:`AuditConfig`, or an :class:`LMAuditConfig`
    for ``task: lm``."""
    ctx = _Ctx(source, Path(base_dir) if base_dir is not None else Path.cwd())
    if isinstance(raw, Mapping) and "task" in raw:
        if raw["task"] not in TASKS:
            raise ctx.error("task", raw["task"], "'classifier' (the default) or 'lm' (language models on prompt sets)"
                            + _did_you_mean(str(raw["task"]), TASKS))
        if raw["task"] == "lm":
            return parse_lm_config(raw, ctx)
    top = ctx.mapping(raw, "", _TOP_KEYS, "a mapping with 'models' and 'data'")
    for req in ("models", "data"):
        if req not in top:
            raise ctx.error(req, None, f"a {req!r} section (required)")
    models = ctx.mapping(top["models"], "models", _MODELS_KEYS, "a mapping with 'teacher' and 'students'")
    teacher = _parse_models(models.get("teacher"), "models.teacher", ctx, required=True)
    students = _parse_models(models.get("students"), "models.students", ctx, required=True)
    references = _parse_models(models.get("references"), "models.references", ctx, required=False)
    controls = _parse_models(models.get("controls"), "models.controls", ctx, required=False)
    positive = _parse_models(models.get("positive_controls"), "models.positive_controls", ctx, required=False)
    needs_refs = {"controls": "negative controls only with models.references (they check the lineage test, which "
                              "needs references)",
                  "positive_controls": "positive controls only with models.references (they measure the power of the "
                                       "lineage test, which needs references)"}
    for key, specs in (("controls", controls), ("positive_controls", positive)):
        if specs and not references:
            raise ctx.error(f"models.{key}", [m.name or str(m.path) for m in specs][:3], needs_refs[key])
    data = _parse_data(top["data"], "data", ctx)
    probes: tuple[DataSpec, ...] = ()
    if top.get("probes") is not None:
        # one data spec, or a list of them (held-out rows plus a public dataset a suspect's maker may have used)
        items = top["probes"] if isinstance(top["probes"], list) else [top["probes"]]
        if not items:
            raise ctx.error("probes", top["probes"], "a data spec or a non-empty list of data specs")
        probes = tuple(_parse_data(v, f"probes[{i}]" if isinstance(top["probes"], list) else "probes", ctx)
                       for i, v in enumerate(items))
    # One meaning for both spellings: the sensitive features of the audit rows. For a data file they are the columns
    # (or sensitive_<name> arrays) read as groups, not as features; for a bundled dataset, a subset of its own.
    sensitive = (ctx.str_list(top["sensitive"], "sensitive", "a list of sensitive feature names")
                 if top.get("sensitive") is not None else None)
    if sensitive is not None and data.sensitive is not None and set(sensitive) != set(data.sensitive):
        raise ctx.error("sensitive", list(sensitive), f"the same features as data.sensitive {list(data.sensitive)} "
                        "(both keys name the data's sensitive features; give one of them)")
    if data.path is not None:
        if sensitive is not None and data.sensitive is None:
            data = dataclasses.replace(data, sensitive=sensitive)
        sensitive = None  # the file's reader selects them
    elif data.sensitive is not None:
        sensitive = tuple(data.sensitive)
        data = dataclasses.replace(data, sensitive=None)
    sections = DEFAULT_SECTIONS + (("lineage",) if references else ())
    if top.get("sections") is not None:
        from kdaudit.sections import section_names

        known = section_names()  # kdaudit's sections and any a plugin registers
        sections = ctx.str_list(top["sections"], "sections", f"a list among {', '.join(known)}")
        for i, s in enumerate(sections):
            if s not in known:
                raise ctx.error(f"sections[{i}]", s, f"one of {', '.join(known)}" + _did_you_mean(s, known))
        if "lineage" in sections and not references:
            raise ctx.error("sections", list(sections), "'lineage' only with models.references (the teacher's "
                            "recipe trained with other seeds), which the lineage test compares against")
    seed, n_rep, level, n_blocks = _seed_and_bootstrap(top, ctx)
    batch_size = ctx.int_(top.get("batch_size", 256), "batch_size", minimum=1)
    device = ctx.str_(top.get("device", "cpu"), "device", "a torch device such as 'cpu' or 'cuda'")
    precision = None
    if top.get("precision") is not None:
        precision = top["precision"]
        if precision not in ("float32", "bf16", "bfloat16", "fp16", "float16"):
            raise ctx.error("precision", precision, "one of float32, bf16, fp16")
    cache_dir = _directory(top, "cache_dir", "a directory", ctx)
    out = _directory(top, "out", "an output directory", ctx)
    policy: Any = None
    if top.get("policy") is not None:
        pv = _policy_value(top["policy"], ctx)
        from kdaudit.sections import section_names

        policy = load_policy(pv, sections=section_names(), _source=f"{ctx.source}#policy.")
    name = ctx.str_(top["name"], "name") if top.get("name") is not None else None
    lineage = ctx.mapping(top.get("lineage") or {}, "lineage", _LINEAGE_KEYS,
                          "a mapping such as {alpha: 0.05, query_budget: 2000}")
    if "alpha" in lineage:
        a = lineage["alpha"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1:
            raise ctx.error("lineage.alpha", a, "a significance level in (0, 1), e.g. 0.05")
    for k in ("query_budget", "n_probes"):
        if lineage.get(k) is not None:
            ctx.int_(lineage[k], f"lineage.{k}", minimum=1)
    if "p_value_method" in lineage and lineage["p_value_method"] not in ("exact", "parametric"):
        raise ctx.error("lineage.p_value_method", lineage["p_value_method"], "'exact' or 'parametric'")
    if "controls_mode" in lineage:
        from kdaudit.lineage import CONTROLS_MODES, MIN_CALIBRATION_CONTROLS

        mode = lineage["controls_mode"]
        if mode not in CONTROLS_MODES:
            raise ctx.error("lineage.controls_mode", mode, "one of " + ", ".join(map(repr, CONTROLS_MODES))
                            + _did_you_mean(str(mode), CONTROLS_MODES))
        need = MIN_CALIBRATION_CONTROLS if mode == "calibrate" else 1
        if len(controls) < need:
            raise ctx.error("lineage.controls_mode", mode, f"a mode whose controls are given: {mode!r} needs at least "
                            f"{need} models under models.controls ({len(controls)} given)")
    if "suspect_access" in lineage:
        sa = lineage["suspect_access"]
        if not _access_ok(sa):
            raise ctx.error("lineage.suspect_access", sa, "'probabilities', 'top_k:K' (K >= 1) or 'labels'")
    names = [m.name for m in teacher + students + references + controls + positive if m.name is not None]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ctx.error("models", dup[0], "distinct model names (this name is used twice)")
    return AuditConfig(teacher=teacher, students=students, data=data, references=references, controls=controls,
                       positive_controls=positive, probes=probes, sensitive=sensitive, sections=tuple(sections),
                       seed=seed, n_replicates=n_rep, level=float(level), n_blocks=n_blocks, batch_size=batch_size,
                       device=device, precision=precision, cache_dir=cache_dir, policy=policy, out=out, name=name,
                       lineage=dict(lineage), section_options=_section_options(top, ctx),
                       executor=_parse_executor(top.get("executor"), ctx), source=source, base_dir=ctx.base_dir)


def _parse_executor(raw: Any, ctx: _Ctx) -> dict[str, Any]:
    """The ``executor:`` block: ``{kind: local}`` or ``{kind: ray, address: auto, num_actors: 8, ...}``."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = {"kind": raw}
    ex = dict(ctx.mapping(raw, "executor", _EXECUTOR_KEYS, "a mapping such as {kind: ray, address: auto}"))
    kinds = ("local", "ray")
    kind = ex.get("kind", "local")
    if kind not in kinds:
        raise ctx.error("executor.kind", kind, "one of 'local', 'ray'" + _did_you_mean(str(kind), kinds))
    ex["kind"] = kind
    if kind == "local":
        extra = sorted(k for k in ex if k not in ("kind", "block_rows"))
        if extra:
            raise ctx.error(f"executor.{extra[0]}", ex[extra[0]], "no such option for kind 'local' (only "
                            "block_rows; the others are Ray's)")
    if ex.get("address") is not None:
        ctx.str_(ex["address"], "executor.address", "a Ray address such as 'auto' or 'ray://head:10001'")
    for key, minimum in (("num_actors", 1), ("batch_size", 1), ("block_rows", 1), ("max_restarts", 0),
                         ("max_task_retries", 0)):
        if ex.get(key) is not None:
            ctx.int_(ex[key], f"executor.{key}", minimum=minimum)
    for key in ("num_cpus_per_actor", "num_gpus_per_actor"):
        v = ex.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ctx.error(f"executor.{key}", v, "a number >= 0")
    if ex.get("runtime_env") is not None:
        ctx.mapping(ex["runtime_env"], "executor.runtime_env",
                    ("pip", "conda", "working_dir", "py_modules", "env_vars", "excludes", "container", "uv"),
                    "a Ray runtime environment such as {pip: [kdaudit], working_dir: .}")
    return {k: v for k, v in ex.items() if v is not None}


def _section_options(top: Mapping[str, Any], ctx: _Ctx) -> dict[str, dict[str, Any]]:
    """``section_options: {section: {option: value}}``, checked by each section's own schema (the one the API and
    the CLI's ``--option`` use)."""
    from kdaudit.sections import registry

    raw = ctx.mapping(top.get("section_options") or {}, "section_options", tuple(registry()),
                      "a mapping section -> {option: value}, e.g. {calibration: {n_bins: 10}}")
    return {name: registry()[name].check_options(opts, "section_options", error=ctx.error)
            for name, opts in raw.items()}


def load_config(config: Any) -> AuditConfig | LMAuditConfig:
    """Read and validate an audit config from a YAML file path (or a mapping, relative to the current directory).

    Raises
    ------
    ConfigError
        Missing file, invalid YAML, or an invalid key (the message names the key path, the value and what is
        accepted).
    """
    if isinstance(config, (AuditConfig, LMAuditConfig)):
        return config
    if isinstance(config, Mapping):
        return parse_config(config, source="config")
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        raw = read_yaml_file(path, what="config file", expected="an audit YAML file")
        return parse_config(raw, source=str(path), base_dir=path.resolve().parent)
    raise ConfigError(f"config got {type(config).__name__}; expected a YAML file path or a mapping")


# ------------------------------------------------------------------------------------- language models (task: lm)
# A language-model audit's config (``task: lm``): the teacher and students as local Hugging Face directories,
# OpenAI-compatible endpoints or precomputed outputs; the data as prompt files or the bundled corpus; the sections'
# options (top-k, generation length, choice scoring, group size) under ``section_options`` like every section's.
TASKS = ("classifier", "lm")
_LM_TOP_KEYS = ("task", "name", "models", "data", "sections", "seed", "bootstrap", "batch_size", "device",
                "precision", "cache_dir", "policy", "out", "section_options")
_LM_MODELS_KEYS = ("teacher", "students")
_LM_MODEL_KEYS = ("path", "endpoint", "model", "name", "role", "api", "access", "max_top_k", "api_key_env",
                  "max_prompts", "max_tokens", "timeout_s", "deadline_s", "max_retries", "version", "tokenizer_from",
                  "tokenizer_sha256", "max_length", "truncation")
_ENDPOINT_ONLY = ("model", "api", "access", "max_top_k", "api_key_env", "max_prompts", "max_tokens", "timeout_s",
                  "deadline_s", "max_retries", "version", "tokenizer_from")
_LM_PROMPT_KEYS = ("path", "corpus", "name", "rows", "groups", "id_field", "prompt_field", "messages_field",
                   "reference_field", "choices_field", "answer_field", "kind", "n", "seed", "prompt_chars",
                   "reference_chars", "n_choices")
_PROMPT_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet", ".pq")
_LM_OUTPUT_SUFFIXES = (".jsonl", ".ndjson", ".parquet")
CORPORA = ("stdlib",)
_CORPUS_KINDS = ("continuations", "choices")
# the LM demo's sizes (the held-out docstrings hold 120 of 80 + 80 characters, and 100 functions for the task)
_CORPUS_DEFAULTS = {"continuations": {"n": 120, "prompt_chars": 80, "reference_chars": 80}, "choices": {"n": 100}}
# what a classifier config holds that a language-model audit has no use for, and why
_NOT_FOR_LM = {"references": "the lineage of language models is tested by 'kdaudit lineage --prompts'",
               "controls": "controls are students with 'role: control' in a language-model audit",
               "probes": "the lineage of language models is tested by 'kdaudit lineage --prompts'",
               "lineage": "the lineage of language models is tested by 'kdaudit lineage --prompts'",
               "sensitive": "prompt-level groups are the prompt file's 'groups' columns",
               "executor": "a language-model audit runs in this process"}


@dataclass(frozen=True)
class LMModelSpec:
    """One language model of a config: a local Hugging Face directory, an endpoint, or precomputed outputs."""

    source: str  # "huggingface", "endpoint" or "precomputed"
    path: Path | None = None
    endpoint: str | None = None
    name: str | None = None
    role: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # the adapter's other arguments, as configured
    key: str = field(default="", compare=False)

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"path": _rel(self.path, base_dir)} if self.path is not None else \
            {"endpoint": self.endpoint}
        for k in ("name", "role"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update(self.options)
        return d


@dataclass(frozen=True)
class PromptSpec:
    """One prompt set of a config: a prompt file, or prompts drawn from the bundled corpus."""

    path: Path | None = None
    corpus: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    rows: int | None = None
    where: str = field(default="", compare=False)  # the config file and key, for messages

    def load(self) -> Any:
        """The :class:`~kdaudit.data.PromptSet` (the first ``rows`` prompts when ``rows`` is set).

        Raises
        ------
        ConfigError
            Naming the config key, when the file or the corpus cannot give the prompts asked for.
        """
        opts = dict(self.options)
        try:
            if self.path is not None:
                from kdaudit.data._prompts import load_prompts

                ps = load_prompts(self.path, **opts)
            else:
                from kdaudit.data._corpus import continuation_prompts, docstring_choice_task, load_stdlib_corpus

                kind = opts.pop("kind", "continuations")
                make = continuation_prompts if kind == "continuations" else docstring_choice_task
                for k, v in _CORPUS_DEFAULTS[kind].items():
                    opts.setdefault(k, v)
                # held-out documents, as the demo audits on: the split is fixed by each docstring's id
                _, held = load_stdlib_corpus().split(heldout_fraction=0.2)
                ps = make(held, **opts)
        except ConfigError:
            raise
        except KDAuditError as exc:
            raise ConfigError(f"{self.where}: {exc}") from None
        if self.rows is not None and self.rows < len(ps):
            ps = ps.subset(np.arange(self.rows))
        return ps

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"path": _rel(self.path, base_dir)} if self.path is not None else {"corpus": self.corpus}
        d.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()})
        if self.rows is not None:
            d["rows"] = self.rows
        return d


@dataclass(frozen=True)
class LMAuditConfig:
    """A validated language-model audit configuration (``task: lm``)."""

    teacher: LMModelSpec
    students: tuple[LMModelSpec, ...]
    data: tuple[PromptSpec, ...]
    sections: tuple[str, ...] | None = None
    seed: int = 0
    n_replicates: int = 1000
    level: float = 0.95
    n_blocks: int | None = None
    batch_size: int = 8
    device: str | None = None
    precision: str | None = None
    cache_dir: Path | None = None
    policy: Any = None
    out: Path | None = None
    name: str | None = None
    section_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""
    base_dir: Path = field(default_factory=Path.cwd)
    task: str = "lm"

    def to_dict(self) -> dict[str, Any]:
        """The configuration as recorded in results.json (paths relative to the config file, no API key)."""
        b = self.base_dir
        d: dict[str, Any] = {
            "task": "lm",
            "models": {"teacher": self.teacher.to_dict(b), "students": [m.to_dict(b) for m in self.students]},
            "data": [p.to_dict(b) for p in self.data],
            "seed": self.seed,
            "bootstrap": {"replicates": self.n_replicates, "level": self.level},
            "batch_size": self.batch_size,
        }
        for k in ("device", "precision", "name"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.sections is not None:
            d["sections"] = list(self.sections)
        if self.n_blocks is not None:
            d["bootstrap"]["blocks"] = self.n_blocks
        if self.section_options:
            d["section_options"] = {k: dict(v) for k, v in self.section_options.items()}
        return d

    bootstrap = AuditConfig.bootstrap

    def load_data(self) -> list[Any]:
        return [spec.load() for spec in self.data]

    def load_models(self) -> tuple[Any, dict[str, Any], dict[str, str]]:
        """``(teacher, {name: student}, {name: role})``: local models first, so that an endpoint's
        ``tokenizer_from`` finds the tokenizer of the local model it names."""
        specs = [self.teacher, *self.students]
        loaded: dict[int, Any] = {}
        for i, spec in enumerate(specs):
            if spec.source != "endpoint":
                loaded[i] = self._load(spec, {})
        by_name = {m.name: m for m in loaded.values()}
        for i, spec in enumerate(specs):
            if spec.source == "endpoint":
                loaded[i] = self._load(spec, by_name)
        students = {loaded[i].name: loaded[i] for i in range(1, len(specs))}
        roles = {loaded[i].name: spec.role for i, spec in enumerate(specs) if i and spec.role is not None}
        return loaded[0], students, roles

    def _load(self, spec: LMModelSpec, local: Mapping[str, Any]) -> Any:
        opts = dict(spec.options)
        if spec.source == "huggingface":
            from kdaudit.models._hf import HFCausalLM

            # one device and precision for every local model of the audit
            return HFCausalLM.from_pretrained(spec.path, name=spec.name, device=self.device,
                                              precision=self.precision, batch_size=self.batch_size, **opts)
        if spec.source == "precomputed":
            from kdaudit.models._lm_precomputed import PrecomputedLM

            return PrecomputedLM(spec.path, name=spec.name, **opts)
        from kdaudit.models._endpoint import OpenAIEndpointModel

        tokenizer = None
        if opts.get("tokenizer_from") is not None:
            owner = local.get(opts.pop("tokenizer_from"))
            tokenizer = getattr(owner, "tokenizer", None)
            if tokenizer is None:
                raise ConfigError(f"{self.source}: config key '{spec.key}.tokenizer_from' names no local Hugging "
                                  f"Face model of this config (local models: {', '.join(map(repr, local))})")
        return OpenAIEndpointModel(spec.endpoint, opts.pop("model"), name=spec.name, tokenizer=tokenizer,
                                   cache_dir=None if self.cache_dir is None else self.cache_dir / "endpoints",
                                   **opts)


def _parse_lm_model(value: Any, path: str, ctx: _Ctx) -> LMModelSpec:
    if isinstance(value, str):
        value = {"endpoint": value} if value.startswith(("http://", "https://")) else {"path": value}
    m = ctx.mapping(value, path, _LM_MODEL_KEYS, "a model directory or outputs file path, or a mapping with 'path' "
                    "(a Hugging Face directory, or precomputed outputs .jsonl/.parquet) or 'endpoint' (an "
                    "OpenAI-compatible URL) and 'name'")
    if ("path" in m) == ("endpoint" in m):
        raise ctx.error(path, dict(m), "exactly one of 'path' (a Hugging Face model directory, or precomputed "
                        "outputs .jsonl/.parquet) or 'endpoint' (an OpenAI-compatible base URL)")
    name = ctx.str_(m["name"], _join(path, "name")) if m.get("name") is not None else None
    role = _role_of(m, path, ctx)
    opts: dict[str, Any] = {}
    for k in ("max_top_k", "max_prompts", "max_tokens", "max_retries", "max_length"):
        if m.get(k) is not None:
            opts[k] = ctx.int_(m[k], _join(path, k), minimum=0 if k in ("max_prompts", "max_tokens", "max_retries")
                               else 1)
    if "max_top_k" in opts and opts["max_top_k"] > 20:
        raise ctx.error(_join(path, "max_top_k"), opts["max_top_k"], "an integer in [1, 20]")
    for k in ("timeout_s", "deadline_s"):
        v = m.get(k)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ctx.error(_join(path, k), v, "a number of seconds > 0")
            opts[k] = v
    if "endpoint" in m:
        url = ctx.str_(m["endpoint"], _join(path, "endpoint"), "an http:// or https:// URL")
        if not url.startswith(("http://", "https://")):
            raise ctx.error(_join(path, "endpoint"), url, "an http:// or https:// base URL such as "
                            "'http://127.0.0.1:8000/v1'")
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ctx.error(_join(path, "endpoint"), "a URL with user:password@", "a URL without credentials (the "
                            "key is read from the environment variable named by api_key_env)")
        opts["model"] = ctx.str_(m.get("model"), _join(path, "model"), "the model name the endpoint serves "
                                 "(required with 'endpoint')")
        for k, choices in (("api", ("completions", "chat")), ("access", ("logprobs", "text"))):
            if m.get(k) is not None:
                if m[k] not in choices:
                    raise ctx.error(_join(path, k), m[k], " or ".join(map(repr, choices)))
                opts[k] = m[k]
        for k in ("api_key_env", "version", "tokenizer_from"):
            if m.get(k) is not None:
                opts[k] = ctx.str_(m[k], _join(path, k))
        for k in ("tokenizer_sha256", "max_length", "truncation"):
            if k in m:
                raise ctx.error(_join(path, k), m[k], f"nothing: {k!r} applies to a model 'path', not to an endpoint")
        return LMModelSpec("endpoint", endpoint=url.rstrip("/"), name=name or opts["model"], role=role,
                           options=opts, key=path)
    for k in _ENDPOINT_ONLY:
        if k in m:
            raise ctx.error(_join(path, k), m[k], f"nothing: {k!r} applies to an 'endpoint', not to a model 'path'")
    p = ctx.file(m["path"], _join(path, "path"), "a Hugging Face model directory or precomputed outputs file")
    if p.is_dir():
        if "tokenizer_sha256" in m:
            raise ctx.error(_join(path, "tokenizer_sha256"), m["tokenizer_sha256"], "nothing: a Hugging Face "
                            "directory carries its tokenizer")
        if m.get("truncation") is not None:
            opts["truncation"] = ctx.bool_(m["truncation"], _join(path, "truncation"))
        return LMModelSpec("huggingface", path=p, name=name or p.name, role=role, options=opts, key=path)
    if p.suffix.lower() not in _LM_OUTPUT_SUFFIXES:
        raise ctx.error(_join(path, "path"), m["path"], "a Hugging Face model directory (config.json, "
                        "model.safetensors, tokenizer) or precomputed outputs ending in "
                        + ", ".join(_LM_OUTPUT_SUFFIXES))
    for k in ("max_length", "truncation"):
        if k in m:
            raise ctx.error(_join(path, k), m[k], f"nothing: {k!r} applies to a Hugging Face directory")
    if m.get("tokenizer_sha256") is not None:
        opts["tokenizer_sha256"] = ctx.str_(m["tokenizer_sha256"], _join(path, "tokenizer_sha256"))
    return LMModelSpec("precomputed", path=p, name=name or p.stem, role=role, options=opts, key=path)


def _parse_prompts(value: Any, path: str, ctx: _Ctx) -> PromptSpec:
    if isinstance(value, str):
        value = {"corpus": value} if value in CORPORA else {"path": value}
    d = ctx.mapping(value, path, _LM_PROMPT_KEYS, "a prompt file path (.jsonl, .csv, .parquet), the bundled corpus "
                    f"({', '.join(CORPORA)}), or a mapping with 'path' or 'corpus'")
    if ("path" in d) == ("corpus" in d):
        raise ctx.error(path, dict(d), "exactly one of 'path' (a prompt file .jsonl/.csv/.parquet) or 'corpus' "
                        f"(the bundled text: {', '.join(CORPORA)})")
    rows = ctx.int_(d["rows"], _join(path, "rows"), minimum=1) if d.get("rows") is not None else None
    opts: dict[str, Any] = {}
    file_keys = ("name", "groups", "id_field", "prompt_field", "messages_field", "reference_field", "choices_field",
                 "answer_field")
    corpus_keys = ("kind", "n", "seed", "prompt_chars", "reference_chars", "n_choices")
    if "path" in d:
        for k in corpus_keys:
            if k in d:
                raise ctx.error(_join(path, k), d[k], f"nothing: {k!r} applies to the bundled 'corpus', not to a "
                                "prompt file")
        p = ctx.file(d["path"], _join(path, "path"), "a prompt file (.jsonl, .csv or .parquet)")
        if p.suffix.lower() not in _PROMPT_SUFFIXES:
            raise ctx.error(_join(path, "path"), d["path"], f"a file ending in {', '.join(_PROMPT_SUFFIXES)}")
        for k in file_keys:
            if d.get(k) is not None:
                opts[k] = (ctx.str_list(d[k], _join(path, k), "a list of group column names") if k == "groups"
                           else ctx.str_(d[k], _join(path, k), "a field name" if k.endswith("_field") else "a name"))
        return PromptSpec(path=p, options=opts, rows=rows, where=f"{ctx.source}: config key {path!r}")
    corpus = d["corpus"]
    if corpus not in CORPORA:
        raise ctx.error(_join(path, "corpus"), corpus, "one of " + ", ".join(CORPORA)
                        + _did_you_mean(str(corpus), CORPORA))
    for k in file_keys:
        if k in d:
            raise ctx.error(_join(path, k), d[k], f"nothing: {k!r} applies to a prompt file, not to the bundled "
                            "corpus")
    kind = d.get("kind", "continuations")
    if kind not in _CORPUS_KINDS:
        raise ctx.error(_join(path, "kind"), kind, "'continuations' (docstrings to continue, with their next words "
                        "as reference) or 'choices' (which summary line belongs to this function?)")
    opts["kind"] = kind
    allowed = {"continuations": ("n", "seed", "prompt_chars", "reference_chars"), "choices": ("n", "seed",
                                                                                               "n_choices")}[kind]
    for k in ("n", "seed", "prompt_chars", "reference_chars", "n_choices"):
        if k in d:
            if k not in allowed:
                raise ctx.error(_join(path, k), d[k], f"nothing: {k!r} does not apply to kind {kind!r}")
            opts[k] = ctx.int_(d[k], _join(path, k), minimum={"seed": 0, "n_choices": 2}.get(k, 1))
    return PromptSpec(corpus=corpus, options=opts, rows=rows, where=f"{ctx.source}: config key {path!r}")


def parse_lm_config(top: Mapping[str, Any], ctx: _Ctx) -> LMAuditConfig:
    """Validate a ``task: lm`` config mapping into an :class:`LMAuditConfig`."""
    for key in top:
        if key in _NOT_FOR_LM:
            raise ctx.error(str(key), top[key], f"nothing in a language-model audit (task: lm): {_NOT_FOR_LM[key]}")
    top = ctx.mapping(top, "", _LM_TOP_KEYS, "a mapping with 'task: lm', 'models' and 'data'")
    for req in ("models", "data"):
        if req not in top:
            raise ctx.error(req, None, f"a {req!r} section (required)")
    models = ctx.mapping(top["models"], "models", _LM_MODELS_KEYS, "a mapping with 'teacher' and 'students'")
    if models.get("teacher") is None or isinstance(models["teacher"], list):
        raise ctx.error("models.teacher", models.get("teacher"), "one language model (required; an ensemble of "
                        "language models is not audited)")
    teacher = _parse_lm_model(models["teacher"], "models.teacher", ctx)
    if teacher.role is not None:
        raise ctx.error("models.teacher.role", teacher.role, "nothing: the teacher's role is 'teacher'")
    raw_students = models.get("students")
    if raw_students is None or raw_students == []:
        raise ctx.error("models.students", raw_students, "a model or a non-empty list of models (required)")
    if isinstance(raw_students, list):
        students = tuple(_parse_lm_model(v, f"models.students[{i}]", ctx) for i, v in enumerate(raw_students))
    else:
        students = (_parse_lm_model(raw_students, "models.students", ctx),)
    raw_data = top["data"] if isinstance(top["data"], list) else [top["data"]]
    if not raw_data or len(raw_data) > 2:
        raise ctx.error("data", top["data"], "one or two prompt sets (at most one without choices and one with)")
    data = tuple(_parse_prompts(v, f"data[{i}]" if isinstance(top["data"], list) else "data", ctx)
                 for i, v in enumerate(raw_data))
    from kdaudit.sections import registry

    reg = registry()
    sections = None
    if top.get("sections") is not None:
        sections = ctx.str_list(top["sections"], "sections", f"a list among {', '.join(reg)}")
        for i, s in enumerate(sections):
            if s not in reg:
                raise ctx.error(f"sections[{i}]", s, f"one of {', '.join(reg)}" + _did_you_mean(s, reg))
            if reg[s].needs.references:
                raise ctx.error(f"sections[{i}]", s, "a section without reference models (the lineage of language "
                                "models is tested by 'kdaudit lineage --prompts')")
    seed, n_rep, level, n_blocks = _seed_and_bootstrap(top, ctx)
    batch_size = ctx.int_(top.get("batch_size", 8), "batch_size", minimum=1)
    device = None
    if top.get("device") is not None:
        device = ctx.str_(top["device"], "device", "a torch device such as 'cpu', 'cuda', 'cuda:1' or 'auto'")
    precision = None
    if top.get("precision") is not None:
        precision = top["precision"]
        if precision not in ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16"):
            raise ctx.error("precision", precision, "one of fp32, bf16, fp16")
    cache_dir = _directory(top, "cache_dir", "a directory", ctx)
    out = _directory(top, "out", "an output directory", ctx)
    policy: Any = None
    if top.get("policy") is not None:
        pv = _policy_value(top["policy"], ctx)
        from kdaudit.policy import DEFAULT_LM_POLICY

        # 'default' is the language-model default policy here
        policy = load_policy(DEFAULT_LM_POLICY if pv == "default" else pv, sections=tuple(reg),
                             _source=f"{ctx.source}#policy.")
    name = ctx.str_(top["name"], "name") if top.get("name") is not None else None
    names = [m.name for m in (teacher, *students) if m.name is not None]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ctx.error("models", dup[0], "distinct model names (this name is used twice; give each model a 'name')")
    local = {str(m.name) for m in (teacher, *students) if m.source == "huggingface"}
    for m in (teacher, *students):
        owner = m.options.get("tokenizer_from")
        if owner is not None and owner not in local:
            raise ctx.error(f"{m.key}.tokenizer_from", owner, "the 'name' of a Hugging Face model directory of this "
                            f"config (named: {', '.join(map(repr, sorted(local))) or 'none'})")
    return LMAuditConfig(teacher=teacher, students=students, data=data, sections=sections, seed=seed,
                         n_replicates=n_rep, level=float(level), n_blocks=n_blocks, batch_size=batch_size,
                         device=device, precision=precision, cache_dir=cache_dir, policy=policy, out=out, name=name,
                         section_options=_section_options(top, ctx), source=ctx.source, base_dir=ctx.base_dir)
