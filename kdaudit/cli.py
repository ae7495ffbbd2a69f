"""The ``kdaudit`` command line. It parses arguments and calls the library; all the work happens there.

Exit codes: 0 success (or the gate passed), 1 the gate (a policy rule) failed, 2 bad input (a missing file, an
invalid config or policy, an unknown metric...). Bad input prints one line, ``kdaudit: error: ...``; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from kdaudit._exceptions import KDAuditError, invalid_argument

__all__ = ["main"]

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _version() -> str:
    from kdaudit._version import __version__

    return __version__


def _common() -> argparse.ArgumentParser:
    # --debug is accepted after the command too ("kdaudit gate ... --debug"); SUPPRESS keeps the main flag's value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    return common


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", parents=[_common()],
        help="train a teacher ensemble and students on UCI Adult and write a full audit report",
        description="Trains a small teacher ensemble on the bundled UCI Adult data, distills a student through the "
                    "harness, trains an independent control, audits both against the teacher and writes "
                    "results.json, run.json and report.html.")
    p.add_argument("--out", default="kdaudit-demo",
                   help="output directory (default: ./kdaudit-demo, outside the files a clone tracks; the committed "
                        "example in reports/demo is rendered by examples/adult_demo.py)")
    p.add_argument("--seed", type=int, default=0, help="seed of training, bootstrap and tests (default 0)")
    p.add_argument("--quick", action="store_true",
                   help="a reduced run (fewer rows, epochs and replicates) for smoke tests; not a real audit")
    p.add_argument("--no-lineage", action="store_true", help="skip the lineage section (and its reference models)")
    p.add_argument("--references", type=int, metavar="N",
                   help="reference ensembles for the lineage test (default 19: the fewest that let the exact p-value "
                        "reach 0.05; 39 reach 0.025 at twice the training time)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--task", choices=("adult", "lm"), default="adult",
                   help="adult: classifiers on UCI Adult (default); lm: a GPT-style language model distilled on "
                        "the Python standard library's docstrings (written to ./kdaudit-demo-lm unless --out)")
    p.add_argument("--save-models", action="store_true",
                   help="with --task lm: also write the three models as Hugging Face directories under OUT/models "
                        "(audited again by 'kdaudit audit examples/configs/lm_audit.yaml')")
    p.set_defaults(func=_cmd_demo, demo_out_default=p.get_default("out"))


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", parents=[_common()],
        help="audit the models a YAML config names; write report.html and results.json",
        description="Runs the audit described by CONFIG (models, data, sensitive features, sections, seed, "
                    "bootstrap, policy) and writes results.json, run.json and report.html to --out. A config with "
                    "'task: lm' audits language models (Hugging Face directories, OpenAI-compatible endpoints or "
                    "precomputed outputs) on prompt files or the bundled corpus (examples/configs/lm_audit.yaml).")
    p.add_argument("config", metavar="CONFIG.yaml", help="audit configuration file")
    p.add_argument("--out", help="output directory (default: the config's 'out', else ./kdaudit-report)")
    p.add_argument("--policy", help="policy YAML overriding the config's policy")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--replicates", type=int, help="override the config's bootstrap replicates")
    p.add_argument("--option", action="append", default=[], metavar="SECTION.NAME=VALUE",
                   help="a section option, checked like the config's section_options (repeatable), e.g. "
                        "--option calibration.n_bins=10")
    p.add_argument("--gate", action="store_true", help="exit 1 when the policy verdict is fail")
    p.add_argument("--strict", action="store_true", help="with --gate: warnings and skipped rules fail too")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where the sections run (overrides the config's executor.kind; results are identical)")
    p.add_argument("--address", help="with --executor ray: the Ray cluster to join (e.g. auto, ray://head:10001)")
    p.set_defaults(func=_cmd_audit)


def _add_gate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate", parents=[_common()],
        help="judge a results.json against a policy; exit 0 pass, 1 fail, 2 bad input",
        description="Judges every rule of the policy on the interval of its metric (pass: the whole interval "
                    "meets the threshold; warn: only the point does; fail: the point does not). Exit 0 when the "
                    "gate passes (warnings pass unless --strict), 1 when a rule fails, 2 on bad input.")
    p.add_argument("results", metavar="RESULTS.json", nargs="?", help="results.json written by kdaudit")
    p.add_argument("--policy", metavar="POLICY.yaml",
                   help="policy file (default: the policy recorded in RESULTS.json, else the default policy)")
    p.add_argument("--markdown", metavar="OUT.md", help="also write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--strict", action="store_true", help="warnings and skipped rules fail the gate")
    p.add_argument("--show-default-policy", action="store_true",
                   help="print the default policy as YAML and exit (of --task, else of RESULTS.json's task)")
    p.add_argument("--task", choices=("classifier", "lm"),
                   help="with --show-default-policy: the kind of audit whose default to print (default: "
                        "RESULTS.json's task when given, else classifier)")
    p.set_defaults(func=_cmd_gate)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", parents=[_common()],
        help="render report.html again from a results.json (and the run.json beside it)",
        description="Renders the HTML report from stored results without re-running any model, e.g. after "
                    "upgrading kdaudit. The run record (run.json next to RESULTS.json, or --run) supplies the "
                    "measured timings; without it they are shown as not measured.")
    p.add_argument("results", metavar="RESULTS.json", help="results.json written by kdaudit")
    p.add_argument("--run", metavar="RUN.json", help="the run record (default: run.json beside RESULTS.json)")
    p.add_argument("--out", metavar="REPORT.html", help="where to write (default: report.html beside RESULTS.json)")
    p.set_defaults(func=_cmd_report)


_LINEAGE_HELP = "test whether a suspect model was distilled from a teacher (p-value, verdict)"


def _add_lineage(sub: argparse._SubParsersAction, *, full: bool) -> None:
    help_text = _LINEAGE_HELP
    if not full:
        # Listed in --help without importing the lineage stack (torch, scipy): `kdaudit --help` stays fast.
        p = sub.add_parser("lineage", help=help_text, add_help=False)
        p.set_defaults(func=_cmd_lineage_missing)
        return
    try:
        from kdaudit.lineage._cli import add_lineage_arguments, run_lineage_command
    except ImportError:
        p = sub.add_parser("lineage", help=help_text + " [not available in this installation]")
        p.set_defaults(func=_cmd_lineage_missing)
        return
    p = sub.add_parser(
        "lineage", parents=[_common()], help=help_text,
        description="Compares the suspect's closeness to the teacher with its closeness to reference models "
                    "exchangeable with the teacher, and turns it into a p-value with a stated null.")
    add_lineage_arguments(p)
    p.set_defaults(func=lambda args: run_lineage_command(args))


def build_parser(*, lineage: bool = True) -> argparse.ArgumentParser:
    """The argument parser; ``lineage=False`` lists the lineage command without loading its options."""
    parser = argparse.ArgumentParser(
        prog="kdaudit",
        description="Audit knowledge-distilled models: fidelity, calibration, bias transfer, error fingerprints, "
                    "cost and teacher lineage, with intervals, a review gate and a self-contained HTML report.",
        epilog="Exit codes: 0 ok, 1 gate failed, 2 bad input. Run 'kdaudit COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"kdaudit {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_demo(sub)
    _add_audit(sub)
    _add_gate(sub)
    _add_report(sub)
    _add_lineage(sub, full=lineage)
    return parser


# ---------------------------------------------------------------------------------------------------- commands
def _cmd_demo(args: argparse.Namespace) -> int:
    if args.task == "lm":
        from kdaudit._demo_lm import DEFAULT_LM_DEMO_OUT, run_lm_demo

        out = DEFAULT_LM_DEMO_OUT if args.out == args.demo_out_default else args.out
        result, paths = run_lm_demo(out, seed=args.seed, quick=args.quick, progress=not args.quiet,
                                    save_models=args.save_models)
        print_summary(result, paths)
        return EXIT_OK
    from kdaudit._demo import run_demo

    if args.save_models:
        raise invalid_argument("--save-models", True, "--save-models together with --task lm (the Adult demo's "
                                                      "models are written by examples/adult_demo.py)")

    if args.references is not None and args.references < 1:
        raise KDAuditError(f"argument '--references' got {args.references}; expected an integer >= 1 "
                           "(or --no-lineage)")
    result, paths = run_demo(args.out, seed=args.seed, quick=args.quick, lineage=not args.no_lineage,
                             progress=not args.quiet, n_references=args.references)
    print_summary(result, paths)
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    from kdaudit._run_config import audit_from_config
    from kdaudit._config import load_config

    if args.strict and not args.gate:
        raise invalid_argument("--strict", True, "--strict together with --gate (it changes what fails the gate)")
    cfg = load_config(args.config)
    overrides: dict = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.replicates is not None:
        overrides["n_replicates"] = args.replicates
    if args.policy is not None:
        from kdaudit.policy import load_policy
        from kdaudit.sections import section_names

        overrides["policy"] = load_policy(args.policy, sections=section_names())
    if args.option:
        overrides["section_options"] = _parse_options(args.option)
    if getattr(cfg, "task", None) == "lm" and (args.executor is not None or args.address is not None):
        raise invalid_argument("--executor" if args.executor is not None else "--address",
                               args.executor or args.address, "nothing for a language-model config (task: lm): "
                               "it runs in this process")
    if args.executor is not None or args.address is not None:
        kind = args.executor or cfg.executor.get("kind", "local")
        if args.address is not None and kind != "ray":
            raise invalid_argument("--address", args.address, "--address together with --executor ray (or a "
                                                               "config whose executor.kind is ray)")
        if kind == "local":
            overrides["executor"] = "local"
        else:  # the config's Ray options stay, --address replaces its address
            opts = {k: v for k, v in cfg.executor.items() if k not in ("kind", "block_rows")} \
                if cfg.executor.get("kind") == "ray" else {}
            if args.address is not None:
                opts["address"] = args.address
            overrides["executor"] = ("ray", opts)
    out = Path(args.out) if args.out else (cfg.out or Path("kdaudit-report"))
    result = audit_from_config(cfg, save=False, progress=not args.quiet, **overrides)
    paths = result.save(out)
    print_summary(result, paths)
    if args.gate:
        from kdaudit.policy import verdict_of

        return EXIT_GATE_FAILED if verdict_of(result.findings, strict=args.strict) == "fail" else EXIT_OK
    return EXIT_OK


def _parse_options(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["calibration.n_bins=10", ...]`` as ``{"calibration": {"n_bins": "10"}}``; the section's schema converts
    and checks each value (the same schema the API and config files use)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise invalid_argument("--option", item, "SECTION.NAME=VALUE, e.g. calibration.n_bins=10")
        out.setdefault(section.strip(), {})[name.strip()] = value.strip()
    return out


def _cmd_gate(args: argparse.Namespace) -> int:
    from kdaudit.policy import default_policy, gate

    if args.show_default_policy:
        import yaml

        task = args.task
        if task is None and args.results:  # the default the gate would apply to these results
            import json

            try:
                results = json.loads(Path(args.results).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise invalid_argument("RESULTS.json", args.results, f"a readable results.json ({exc})") from None
            task = results.get("task") if isinstance(results, dict) else None
        print(yaml.safe_dump(default_policy(task), sort_keys=False, width=100), end="")
        return EXIT_OK
    if args.task is not None:
        raise invalid_argument("--task", args.task, "--task together with --show-default-policy (the gate reads the "
                                                    "task from RESULTS.json)")
    if not args.results:
        raise KDAuditError("gate needs RESULTS.json (the results.json that 'kdaudit audit' or 'kdaudit demo' wrote)")
    result = gate(args.results, args.policy, strict=args.strict)
    print(result.to_text())
    if args.markdown:
        from kdaudit._io import atomic_write_text

        atomic_write_text(args.markdown, result.to_markdown())
    return result.exit_code


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from kdaudit.report import write_html

    results_path = Path(args.results)
    run_path = Path(args.run) if args.run else results_path.with_name("run.json")

    def read(path: Path, what: str) -> dict:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise invalid_argument(what, str(path), f"a readable JSON file written by kdaudit ({exc})") from None
        if not isinstance(value, dict):
            raise invalid_argument(what, str(path), "a JSON object written by kdaudit")
        return value

    results = read(results_path, "RESULTS.json")
    run_info = read(run_path, "--run") if (args.run or run_path.is_file()) else None
    from kdaudit.sections import registry

    out = write_html(results, Path(args.out) if args.out else results_path.with_name("report.html"),
                     run_info=run_info, summary_keys={n: s.summary_keys for n, s in registry().items()})
    print(f"report: {out}")
    return EXIT_OK


def _cmd_lineage_missing(args: argparse.Namespace) -> int:
    raise KDAuditError("the lineage command is not available in this installation (kdaudit.lineage._cli missing)")


def print_summary(result: object, paths: dict) -> None:
    """Print the verdict, the warnings and failures, lineage verdicts and the files written."""
    verdict = getattr(result, "verdict", "?")
    findings = getattr(result, "findings", ())
    print(f"verdict: {str(verdict).upper()}")
    for f in findings:
        if f.status in ("fail", "warn"):
            print(f"  {f.status.upper()}: {f.message}")
    to_dict = getattr(result, "to_dict", None)
    for comp in (to_dict()["comparisons"] if to_dict else []):
        lin = comp.get("lineage")
        if isinstance(lin, dict) and lin.get("verdict"):
            # the p-value's method is part of it: --quick's parametric p-value rests on a normality assumption
            print(f"lineage, {comp['student']}: {lin['verdict']} (p = {lin.get('p_value')}, "
                  f"{lin.get('p_value_method') or 'method not recorded'}, {lin.get('n_references')} references)")
    for kind, path in paths.items():
        print(f"{kind}: {path}")


# -------------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdaudit`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(lineage=command == "lineage")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    debug = args.debug or bool(os.environ.get("KDAUDIT_DEBUG"))
    try:
        return int(args.func(args))
    except (KDAuditError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError) as exc:  # an --out or --markdown path that is a file, or lies under one, is bad input
        if debug:
            raise
        print(f"kdaudit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("kdaudit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
