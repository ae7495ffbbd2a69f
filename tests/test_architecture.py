"""The package's structure as tests: layers import only downward, no import cycles, and a light start.

Layers, lowest first (ARCHITECTURE.md draws the same picture). A module may import its own layer's modules and any
lower layer's; an import that runs upward or closes a cycle between modules fails here, with the file and line.
Imports inside functions count too: a lazy import still couples the two modules.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdaudit"

#: layer of every top-level part of the package (subpackage or module), lowest first
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundation", frozenset({"_exceptions", "_validation", "_estimate", "_io", "_kinds", "_lm_outputs",
                              "_rows", "_version"})),
    ("data", frozenset({"data"})),
    ("models", frozenset({"models"})),
    ("harness", frozenset({"harness"})),
    # the statistics sit with the sections that use them: a metric may read the harness's output containers
    ("sections and statistics", frozenset({"sections", "metrics", "lineage", "distill"})),
    # where the sections run (local, Ray): folds over shards of models, harness and accumulators
    ("executors", frozenset({"executors"})),
    # policy and report come after the audit in the flow of results, but depend on nothing but the foundation: the
    # audit hands them its results (a plain dict) to judge and render, and they never import the audit
    ("results readers", frozenset({"policy", "report"})),
    ("audit", frozenset({"_result", "_audit", "_audit_lm"})),
    ("entry points", frozenset({"_config", "_run_config", "_demo", "_demo_lm", "cli", "__init__"})),
)
#: policy and report read results only: besides the foundation (and each other) they import nothing of kdaudit
RESULTS_ONLY = frozenset({"policy", "report"})


def _rank(part: str) -> int:
    for i, (_, parts) in enumerate(LAYERS):
        if part in parts:
            return i
    raise AssertionError(f"kdaudit/{part} has no layer: add it to LAYERS (and to ARCHITECTURE.md)")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every kdaudit import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    type_only: set[int] = set()
    for node in ast.walk(tree):  # ``if TYPE_CHECKING:`` blocks never run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "kdaudit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "kdaudit":
                continue
            # ``from kdaudit.models import _torch`` imports a module; ``from kdaudit import audit`` a name
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                out.append((sub if is_module else target, node.lineno))
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_import_runs_downward():
    bad = []
    for module, imports in _graph().items():
        src = _part(module)
        for target, line in imports:
            dst = _part(target)
            if dst == src or target == "kdaudit" and src != "__init__":
                if target == "kdaudit" and src != "__init__":
                    bad.append(f"{module}:{line} imports the top-level package (import the defining module)")
                continue
            if _rank(dst) > _rank(src):
                bad.append(f"{module}:{line} imports {target}: {LAYERS[_rank(src)][0]} -> {LAYERS[_rank(dst)][0]}")
            elif src in RESULTS_ONLY and _rank(dst) > 0 and dst not in RESULTS_ONLY:
                bad.append(f"{module}:{line} imports {target}: {src} reads results only (foundation imports)")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _ in imps if t != m}) for m, imps in _graph().items()}
    # a package's __init__ re-exporting its own modules is not a cycle in the design's sense: edges from a
    # package to its own submodules are left out, so only module <-> module loops count
    for m in graph:
        graph[m] = [t for t in graph[m] if not t.startswith(m + ".") and t in graph]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The layering test is not vacuous: a models module importing the harness is reported, and so is a cycle."""
    fake = tmp_path / "kdaudit"
    for part in ("models", "harness", "metrics"):
        (fake / part).mkdir(parents=True)
        (fake / part / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "harness" / "_run.py").write_text("from kdaudit.models import x\n")
    (fake / "models" / "_bad.py").write_text("def f():\n    from kdaudit.harness._run import run\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"kdaudit.models._bad:2 imports kdaudit.harness._run"):
        test_every_import_runs_downward()
    (fake / "metrics" / "_loop.py").write_text("from kdaudit.metrics import _loop2\n")
    (fake / "metrics" / "_loop2.py").write_text("import kdaudit.metrics._loop\n")
    with pytest.raises(AssertionError, match="_loop <-> kdaudit.metrics._loop2"):
        test_no_import_cycles()


def test_html_is_rendered_in_the_report_layer_only():
    """Every piece of HTML (the report, the notebook summary of ``AuditResult._repr_html_``) is made under
    ``kdaudit/report/``, which reads results only: no other module escapes HTML or writes markup."""
    markup = re.compile(r"import html\b|html\.escape|<(?:table|div|tr|td|th|ul|li|p|strong|code)\b")
    bad = [f"{p.relative_to(PACKAGE.parent)}:{i}: {line.strip()[:80]}"
           for p in sorted(PACKAGE.rglob("*.py")) if "report" not in p.relative_to(PACKAGE).parts
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if markup.search(line)]
    assert not bad, "HTML outside kdaudit/report/:\n" + "\n".join(bad)


_LIGHT = ("import sys, time\n"
          "t0 = time.perf_counter()\n"
          "{body}\n"
          "heavy = {{'torch', 'scipy', 'sklearn'}} & set(sys.modules)\n"
          "assert not heavy, sorted(heavy)\n")


@pytest.mark.parametrize("body", [
    "import kdaudit\nassert set(kdaudit.__all__) <= set(dir(kdaudit))",
    "from kdaudit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0",
    "from kdaudit.cli import main\nassert main(['gate', '--show-default-policy']) == 0",
    "import kdaudit.policy, kdaudit.report, kdaudit.sections",
])
def test_start_loads_no_torch_scipy_or_sklearn(body):
    """``import kdaudit``, ``kdaudit --help`` and ``kdaudit gate`` never load torch, scipy or scikit-learn."""
    proc = subprocess.run([sys.executable, "-c", _LIGHT.format(body=body)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gate_on_a_results_file_loads_no_torch(tmp_path):
    results = Path(__file__).resolve().parents[1] / "reports" / "demo" / "results.json"
    body = (f"from kdaudit.cli import main\nrc = main(['gate', {str(results)!r}, '--markdown', "
            f"{str(tmp_path / 'g.md')!r}])\nassert rc in (0, 1), rc\n"
            "assert 'numpy' not in sys.modules  # the gate reads JSON: not even numpy")
    proc = subprocess.run([sys.executable, "-c", _LIGHT.format(body=body)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "g.md").exists()


def test_documented_names_keep_working_whatever_is_imported_first():
    """``kdaudit.distill`` stays the function after the subpackage and its modules are imported, in any order."""
    code = ("import inspect, kdaudit\n"
            "import kdaudit.distill._train\n"
            "import kdaudit.distill as d\n"
            "from kdaudit.distill import mlp, train_control\n"
            "assert inspect.isfunction(kdaudit.distill) and kdaudit.distill.__name__ == 'distill'\n"
            "assert kdaudit.distill.train_control is train_control and d is kdaudit.distill\n"
            "assert inspect.isfunction(kdaudit.audit) and inspect.isfunction(kdaudit.lineage_test)\n"
            "assert kdaudit.harness.run.__name__ == 'run' and kdaudit.AuditData.__name__ == 'AuditData'\n"
            "from kdaudit import distill, audit, Bootstrap, load_model, as_model, AuditResult\n"
            "assert distill is kdaudit.distill\n"
            "try:\n    kdaudit.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
            "else:\n    raise AssertionError('no AttributeError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
