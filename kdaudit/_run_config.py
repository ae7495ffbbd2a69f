"""``audit_from_config``: run the audit a config file describes (the CLI's ``kdaudit audit CONFIG``).

It sits above both the config schema (:mod:`kdaudit._config`) and the audit (:mod:`kdaudit._audit`), so neither
imports the other.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from kdaudit._audit import AuditResult, _progress, audit

__all__ = ["audit_from_config"]


def audit_from_config(config: Any, *, out_dir: str | os.PathLike[str] | None = None, save: bool = True,
                      progress: bool = True, **overrides: Any) -> AuditResult:
    """Run the audit a config file (or mapping) describes; see :mod:`kdaudit._config` for its keys.

    ``overrides`` replace audit() arguments (e.g. ``seed``, ``n_replicates``, ``policy``). With ``save``, the
    results are written to ``out_dir``, else to the config's ``out`` when it has one.
    """
    from kdaudit._config import load_config

    cfg = load_config(config)
    # overridden seed and replicates replace the config's, so the recorded config is the one that ran
    from dataclasses import replace as _replace

    n_rep = overrides.pop("n_replicates", None)
    cfg = _replace(cfg, seed=overrides.pop("seed", cfg.seed),
                   n_replicates=cfg.n_replicates if n_rep is None else n_rep)
    if getattr(cfg, "task", None) == "lm":
        return _audit_lm_config(cfg, out_dir=out_dir, save=save, progress=progress, **overrides)
    _progress(progress, f"loading data ({cfg.data.dataset or cfg.data.path})")
    data = cfg.load_data()
    n_models = (len(cfg.teacher) + len(cfg.students) + len(cfg.references) + len(cfg.controls)
                + len(cfg.positive_controls))
    _progress(progress, f"loading {n_models} models")
    teachers = [cfg.load_model(m) for m in cfg.teacher]
    students = {}
    roles: dict[str, str] = {}
    for i, spec in enumerate(cfg.students):
        model = cfg.load_model(spec)
        name = spec.name or getattr(model, "name", None) or f"student{i + 1}"
        if name in students:
            # two files with the same stem would otherwise silently replace one student by the other
            from kdaudit._exceptions import ConfigError

            raise ConfigError(f"{cfg.source}: config key 'models.students[{i}].name' got {spec.name!r}; expected a "
                              f"name distinct from the other students' (the model is named {name!r} after its "
                              "file, like another student: give each student a 'name')")
        students[name] = model
        if spec.role is not None:
            roles[name] = spec.role
    references = [cfg.load_model(m) for m in cfg.references] or None
    controls = [cfg.load_model(m) for m in cfg.controls] or None
    positive_controls = [cfg.load_model(m) for m in cfg.positive_controls] or None
    probes = [spec.load() for spec in cfg.probes] or None
    kwargs: dict[str, Any] = {
        "sections": cfg.sections, "seed": cfg.seed, "policy": cfg.policy, "cache_dir": cfg.cache_dir,
        "device": cfg.device, "precision": cfg.precision, "batch_size": cfg.batch_size, "references": references,
        "controls": controls, "positive_controls": positive_controls, "roles": roles or None, "probes": probes,
        "lineage_options": dict(cfg.lineage) or None,
        "config": cfg.to_dict(),
        # the CLI's --option values override the config's, option by option
        "section_options": _merged(cfg.section_options, overrides.pop("section_options", None)) or None,
        "progress": progress,
    }
    kwargs["bootstrap"] = cfg.bootstrap()
    if cfg.executor:  # the config's executor: block; an ``executor`` override (the CLI's --executor) replaces it
        ex = dict(cfg.executor)
        kind = ex.pop("kind")
        kwargs["block_rows"] = ex.pop("block_rows", None)
        kwargs["executor"] = kind if kind == "local" else ("ray", ex)
    kwargs.update(overrides)
    if isinstance(kwargs.get("executor"), tuple):
        from kdaudit.executors import get_executor

        kwargs["executor"] = get_executor(kwargs["executor"][0], **kwargs["executor"][1])
    teacher = teachers[0] if len(teachers) == 1 else teachers
    result = audit(teacher, students, data, **kwargs)
    target = out_dir if out_dir is not None else cfg.out
    if save and target is not None:
        result.save(target)
    return result


def _audit_lm_config(cfg: Any, *, out_dir: Any, save: bool, progress: bool, **overrides: Any) -> AuditResult:
    """The language-model audit a ``task: lm`` config describes (:class:`kdaudit._config.LMAuditConfig`)."""
    from kdaudit._exceptions import invalid_argument

    for key in ("executor", "references", "controls", "probes", "lineage_options"):
        if overrides.get(key) is not None:
            raise invalid_argument(key, overrides[key], "None for a language-model config (task: lm)")
    _progress(progress, f"loading {len(cfg.data)} prompt set(s)")
    data = cfg.load_data()
    _progress(progress, f"loading {1 + len(cfg.students)} language models")
    with _transformers_bars(progress):
        teacher, students, roles = cfg.load_models()
    kwargs: dict[str, Any] = {
        "sections": cfg.sections, "seed": cfg.seed, "policy": cfg.policy, "cache_dir": cfg.cache_dir,
        "roles": roles or None, "config": cfg.to_dict(), "bootstrap": cfg.bootstrap(), "progress": progress,
        # the CLI's --option values override the config's, option by option (one schema checks both)
        "section_options": _merged(cfg.section_options, overrides.pop("section_options", None)) or None,
    }
    kwargs.update(overrides)
    try:
        result = audit(teacher, students, data, **kwargs)
    finally:
        for m in (teacher, *students.values()):
            close = getattr(m, "close", None)  # an endpoint's HTTP client
            if close is not None:
                close()
    target = out_dir if out_dir is not None else cfg.out
    if save and target is not None:
        result.save(target)
    return result


@contextlib.contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' own loading bars follow ``progress`` (restored afterwards: the setting is process-wide)."""
    if enabled:
        yield
        return
    from transformers.utils import logging as tf_logging

    was = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tf_logging.enable_progress_bar()


def _merged(base: Any, extra: Any) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in (base or {}).items()}
    for section, opts in (extra or {}).items():
        out.setdefault(section, {}).update(opts)
    return out
