"""``kdaudit lineage``: arguments and the command (the CLI module wires them in; all the work is in the library).

Two forms::

    kdaudit lineage --teacher T --suspect S --probes P [--probes P2 ...] [--reference R ...]
                    [--candidate T2[@REFS] ...] [--control C ... [--controls-mode check|calibrate|require]]
                    [--positive-control P ...] [--suspect-access probabilities|top-k:K|labels] [--alpha A]
                    [--query-budget N] [--json OUT]
    kdaudit lineage --verify MANIFEST --student FILE [--manifest-teacher NAME=FILE ...] [--json OUT]
    kdaudit lineage --teacher DIR --suspect DIR|URL|FILE --prompts FILE [--reference DIR ...] [--control DIR ...]
                    [--suspect-access text|top-k:K] [--null references|controls]   (language models)

Model files whose format runs code on load (pickle, TorchScript, torch.export) are refused unless their role is
trusted: ``--trust-teacher``, ``--trust-references``, ``--trust-candidates``, ``--trust-controls``, ``--trust-suspect``
(never implied), ``--trust-student`` and ``--trust-manifest-teachers`` for ``--verify``.

Exit codes: 0 the test ran and its verdict was printed (whatever the verdict; add ``--fail-on-derived`` to exit 1
when the suspect is found derived, for scripted screening); for ``--verify`` 0 the student matches the manifest and
1 it does not; 2 bad input (missing file, unreadable model, invalid option), raised as ``KDAuditError`` and turned
into exit 2 by the CLI's main.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit.lineage._files import EXIT_DERIVED, EXIT_MISMATCH, EXIT_OK, candidate_pools
from kdaudit.lineage._files import expand_patterns as _expand

__all__ = ["EXIT_DERIVED", "EXIT_MISMATCH", "EXIT_OK", "add_lineage_arguments", "run_lineage_command"]


def add_lineage_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``kdaudit lineage`` options to ``parser``."""
    from kdaudit.lineage._test import CONTROLS_MODES

    test = parser.add_argument_group("lineage test")
    test.add_argument("--teacher", metavar="FILE", help="the teacher model file (anything kdaudit.load_model reads)")
    test.add_argument("--suspect", metavar="FILE", help="the suspect model file, or its precomputed outputs")
    test.add_argument("--probes", metavar="FILE", action="append", default=[],
                      help="probe inputs: .npy, .npz (X, optional y), .csv or .parquet (optional label column y). "
                           "Repeat to add sources, e.g. held-out rows and a public dataset the suspect's maker may "
                           "have queried the teacher with (the strongest evidence of label-only extraction)")
    test.add_argument("--reference", metavar="FILE", action="append", default=[],
                      help="a reference model: the teacher's recipe and data with another seed (repeat; globs "
                           "allowed). At least 19 for an exact verdict at alpha 0.05")
    test.add_argument("--candidate", metavar="FILE[@REFGLOB]", action="append", default=[],
                      help="another candidate teacher for attribution (repeat). Its references follow '@' as a glob; "
                           "without '@' it shares --reference (valid when it comes from the same recipe)")
    test.add_argument("--control", metavar="FILE", action="append", default=[],
                      help="a negative control: a model known not to be derived from the teacher or any reference "
                           "(repeat; globs allowed). Tested like the suspect, to check this teacher's false-positive "
                           "rate against unrelated models; with 19 or more the test is calibrated by them. Students "
                           "extracted from siblings of the teacher that are not references (Python: "
                           "kdaudit.lineage.train_student_controls) raise the power most")
    test.add_argument("--positive-control", metavar="FILE", action="append", default=[],
                      help="a positive control: a student you made from the teacher (repeat; globs allowed; loaded "
                           "as the controls are: --trust-controls, --control-arch). Tested like the suspect; the "
                           "share found is the test's power for this teacher, which a 'not derived' quotes")
    test.add_argument("--controls-mode", choices=CONTROLS_MODES, default=None,
                      help="what the controls do. check: reported beside the verdict; calibrate: every pool member's "
                           "statistics are scaled by their spread over the controls, so a teacher over-attractive "
                           "to unrelated models is not favoured (needs >= 19 controls); require: calibrate, and the "
                           "suspect must also outrank the controls (needs >= 19 at 0.05). Default: calibrate with "
                           ">= 19 controls, else check")
    test.add_argument("--require-controls", action="store_true", help="same as --controls-mode require")
    test.add_argument("--suspect-access", metavar="MODE", default=None,
                      help="what to use of the suspect's answers: probabilities, top-k:K or labels "
                           "(default: what the suspect reveals)")
    test.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    test.add_argument("--query-budget", type=int, default=2000, help="most suspect queries (default 2000)")
    test.add_argument("--n-probes", type=int, default=None,
                      help="probes sent to the suspect (default 2000, capped by the query budget)")
    test.add_argument("--p-value", dest="p_value_method", choices=("exact", "parametric"), default="exact",
                      help="p-value for the verdict: exact rank test (default) or parametric t (fewer references)")
    test.add_argument("--seed", type=int, default=0, help="seed of probe blends, selection and bootstrap")
    trust = parser.add_argument_group(
        "trust (per role; each allows that role's files to be pickle, TorchScript or torch.export, formats that run "
        "code when loaded: only for files from a source you trust)")
    for role, what in _TRUST_ROLES.items():
        trust.add_argument(f"--trust-{role}", action="store_true", help=f"trust the {what}")
    trust.add_argument("--trust", action="store_true", help=argparse.SUPPRESS)  # removed: refused with a message
    test.add_argument("--fail-on-derived", action="store_true", help="exit 1 when the verdict is 'derived'")
    _add_arch_arguments(test)
    from kdaudit.lineage._lm_cli import add_lm_arguments

    add_lm_arguments(parser)
    verify = parser.add_argument_group("manifest verification")
    verify.add_argument("--verify", metavar="MANIFEST", help="check a student file against a lineage manifest")
    verify.add_argument("--student", metavar="FILE", help="the student file to check (with --verify)")
    verify.add_argument("--manifest-teacher", metavar="NAME=FILE", action="append", default=[],
                        help="also check a teacher file against the manifest (repeat)")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON")


# role -> what it covers; the suspect is a role like any other: never trusted unless named
_TRUST_ROLES = {
    "teacher": "--teacher file",
    "references": "--reference files",
    "candidates": "--candidate files and their references",
    "controls": "--control files",
    "suspect": "--suspect file (the party under audit: think twice)",
    "student": "--student file of --verify",
    "manifest-teachers": "--manifest-teacher files of --verify",
}


def _trusted(args: argparse.Namespace, role: str) -> bool:
    if getattr(args, "trust", False):
        raise KDAuditError("argument '--trust' was removed: it trusted every model file, the suspect's included; "
                           "expected per-role flags: " + ", ".join(f"--trust-{r}" for r in _TRUST_ROLES))
    return bool(getattr(args, "trust_" + role.replace("-", "_"), False))


_ARCH_FLAGS = (("arch", "teacher, references and candidates"), ("suspect_arch", "suspect (default: --arch)"),
               ("control_arch", "negative controls (default: --suspect-arch)"))


def _add_arch_arguments(group: Any) -> None:
    # A weights-only file (safetensors, a state_dict .pt) needs the code that builds its network; it is named, never
    # read from the file, so nothing in a model file runs.
    for dest, who in _ARCH_FLAGS:
        flag = "--" + dest.replace("_", "-")
        group.add_argument(flag, metavar="NAME", default=None,
                           help=f"the architecture weights-only files of the {who} load into: a registered name "
                                "(mlp, small_cnn, or one added with kdaudit.models.register_architecture); a "
                                "'module:callable' path only for a model trusted with its --trust-<role> flag")
        group.add_argument(flag + "-kwargs", metavar="JSON", default=None,
                           help=f"keyword arguments of {flag}, a JSON object (e.g. '{{\"hidden\": 64}}')")


def _arch_of(args: argparse.Namespace, dest: str) -> tuple[str | None, dict[str, Any] | None]:
    """The architecture an ``--arch``-style flag names and its keyword arguments (from ``--...-kwargs``, JSON)."""
    flag = "--" + dest.replace("_", "-")
    spec, raw = getattr(args, dest, None), getattr(args, dest + "_kwargs", None)
    if spec is None:
        if raw is not None:
            raise invalid_argument(flag + "-kwargs", raw, f"to come with {flag}")
        return None, None
    kwargs: Any = None
    if raw is not None:
        import json

        try:
            kwargs = json.loads(raw)
        except ValueError:
            kwargs = None
        if not isinstance(kwargs, dict):
            raise invalid_argument(flag + "-kwargs", raw, "a JSON object of keyword arguments, e.g. '{\"hidden\": 64}'")
    return spec, kwargs


def _archs(args: argparse.Namespace) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """Which architecture each role's weights-only files load into (resolved by load_model's registry)."""
    arch = _arch_of(args, "arch")
    suspect = _arch_of(args, "suspect_arch")
    suspect = suspect if suspect[0] is not None else arch
    control = _arch_of(args, "control_arch")
    return {"teacher": arch, "references": arch, "candidates": arch, "suspect": suspect,
            "controls": control if control[0] is not None else suspect}


def _load(path: str, args: argparse.Namespace, role: str) -> Any:
    from kdaudit.models import load_model

    arch, arch_kwargs = _archs(args)[role]
    return load_model(path, trust=_trusted(args, role), _trust_hint=f"--trust-{role}", arch=arch,
                      arch_kwargs=arch_kwargs)


def run_lineage_command(args: argparse.Namespace) -> int:
    """Run ``kdaudit lineage`` from parsed arguments; return the exit code (see the module docstring)."""
    from kdaudit._io import atomic_write_text, canonical_json

    if getattr(args, "verify", None):
        from kdaudit.lineage._manifest import verify_manifest

        if not getattr(args, "student", None):
            raise invalid_argument("--student", None, "the student file to check against the manifest")
        teachers = {}
        for item in getattr(args, "manifest_teacher", []) or []:
            name, sep, file = item.partition("=")
            if not sep or not name or not file:
                raise invalid_argument("--manifest-teacher", item, "NAME=FILE")
            teachers[name] = file
        result = verify_manifest(args.verify, args.student, teachers=teachers,
                                 trust_student=_trusted(args, "student"),
                                 trust_teachers=_trusted(args, "manifest-teachers"))
        print(result.summary())
        if getattr(args, "json", None):
            atomic_write_text(args.json, canonical_json(result.to_dict()))
        return EXIT_OK if result.ok else EXIT_MISMATCH

    if getattr(args, "prompts", None):  # language models (kdaudit.lineage._lm_cli)
        from kdaudit.lineage._lm_cli import run_lm_lineage

        if getattr(args, "positive_control", None):
            raise invalid_argument("--positive-control", args.positive_control[0],
                                   "none with --prompts (positive controls are for classifiers)")
        return run_lm_lineage(args)
    for opt in ("teacher", "suspect", "probes"):
        if not getattr(args, opt, None):
            raise invalid_argument(f"--{opt}", None, "a file (or use --verify MANIFEST --student FILE)")
    from kdaudit.lineage._test import attribute, lineage_test, parse_access

    _trusted(args, "teacher")  # refuses the removed --trust before any file is opened
    access = parse_access(args.suspect_access) if args.suspect_access else None
    access_text = None if access is None else (access[0] if access[1] is None else f"top_k:{access[1]}")
    from kdaudit.data._audit_data import AuditData
    from kdaudit.lineage._test import _as_array

    X, y = _as_array(_expand(args.probes, "--probes"))
    probes = AuditData(X=X, y_true=y, name=" + ".join(args.probes))
    teacher = _load(args.teacher, args, "teacher")
    suspect = _load(args.suspect, args, "suspect")
    references = [_load(f, args, "references") for f in _expand(args.reference, "--reference")]
    controls = [_load(f, args, "controls") for f in _expand(args.control, "--control")] or None
    options = {"suspect_access": access_text, "alpha": args.alpha, "query_budget": args.query_budget,
               "n_probes": args.n_probes, "p_value_method": args.p_value_method, "seed": args.seed,
               "controls": controls, "controls_mode": _controls_mode(args)}
    positives = [_load(f, args, "controls") for f in _expand(args.positive_control, "--positive-control")] or None
    if args.candidate:
        if positives:
            raise invalid_argument("--positive-control", args.positive_control[0],
                                   "no --candidate (positive controls belong to one teacher's test)")
        candidates = candidate_pools(args.candidate, teacher, references, lambda f: _load(f, args, "candidates"))
        result = attribute(suspect, candidates, probes, **options)
        print(_attribution_text(result))
        if args.json:
            atomic_write_text(args.json, canonical_json(result.to_dict()))
        derived = result.parent != "none"
    else:
        res = lineage_test(teacher, suspect, probes, references=references, positive_controls=positives, **options)
        print(_result_text(res))
        if args.json:
            atomic_write_text(args.json, canonical_json(res.to_dict()))
        derived = res.derived
    return EXIT_DERIVED if derived and getattr(args, "fail_on_derived", False) else EXIT_OK


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def _result_text(r: Any) -> str:
    lines = [
        f"lineage: is {r.suspect!r} derived from {r.teacher!r}?  verdict: {r.verdict.upper()}",
        (f"  p-value {_fmt(r.p_value)} ({r.p_value_method}; exact {_fmt(r.p_value_exact)}, parametric "
         f"{_fmt(r.p_value_parametric)}), alpha {r.alpha}"),
        f"  effect {r.effect:.2f} reference SDs ({r.effect.method})" if r.effect.has_interval
        else f"  effect {_fmt(r.effect.value)}",
        (f"  {r.n_references} references, {r.n_probes} probes, {r.queries_used} suspect queries "
         f"(budget {r.query_budget}), suspect access {r.suspect_access}"),
        f"  {r.reason}",
        "  signatures (teacher z against references):",
    ]
    lines += [f"    {name:<20} z = {_fmt(s['z_teacher'])}  (rank p {_fmt(s['rank_p_value'])})"
              for name, s in r.signatures.items()]
    nc = r.negative_controls
    if nc:
        lines.append(f"  negative controls ({nc['mode']}): {nc['n_at_alpha']} of {nc['n']} reach p <= {r.alpha:g} "
                     f"(binomial p {_fmt(nc['binomial_p'])}); the suspect's rank p among them "
                     f"{_fmt(nc['suspect_rank_p_value'] if nc['suspect_rank_p_value'] is not None else math.nan)}")
        if nc.get("calibrated_by"):  # names as repr: no control character reaches the terminal
            lines.append(f"  calibrated by the {len(nc['calibrated_by'])} controls most like the suspect: "
                         + ", ".join(repr(str(c)) for c in nc["calibrated_by"]))
        if nc.get("uncalibrated"):
            lines.append(f"  without calibration by the controls: p {_fmt(nc['uncalibrated']['p_value'])}, effect "
                         f"{_fmt(nc['uncalibrated']['effect'] if nc['uncalibrated']['effect'] is not None else math.nan)}")
    pc = r.positive_controls
    if pc:
        from kdaudit.lineage._test import interval_text

        lines.append(f"  positive controls: the test found {pc['n_found']} of {pc['n']} students made from the teacher "
                     f"(power for this teacher, 95% interval {interval_text(pc['interval'])})")
    return "\n".join(lines)


def _controls_mode(args: Any) -> str | None:
    if args.require_controls:
        if args.controls_mode not in (None, "require"):
            raise KDAuditError(f"argument '--require-controls' conflicts with '--controls-mode {args.controls_mode}'; "
                               "expected one of them (--require-controls is --controls-mode require)")
        return "require"
    return args.controls_mode


def _attribution_text(a: Any) -> str:
    lines = [f"attribution: parent = {a.parent}  ({a.reason}; {a.correction})"]
    for name, r in a.results.items():
        lines.append(f"  {name:<24} p {_fmt(r.p_value)}  Holm-adjusted {_fmt(a.adjusted_p_values[name])}  "
                     f"effect {_fmt(r.effect.value)}  ({r.n_references} references)")
    lines.append(f"  suspect queries: {a.queries_used}")
    return "\n".join(lines)
