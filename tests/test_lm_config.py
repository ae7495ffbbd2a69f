"""``kdaudit audit CONFIG`` for language models (``task: lm``): local Hugging Face directories, precomputed outputs
and an OpenAI-compatible endpoint named in one YAML file, prompt files and the bundled corpus, the sections' options
through the one schema (config and ``--option``), bad values as ConfigError / exit 2, and the gate's default policy
chosen by the results' task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kdaudit import ConfigError
from kdaudit._config import LMAuditConfig, load_config
from kdaudit._run_config import audit_from_config
from kdaudit.cli import main

from _lm_fixtures import DOCSTRING_TEXTS

pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parent.parent
TEXTS = DOCSTRING_TEXTS


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder: three tiny GPT-2 directories of one tokenizer, a prompt file with references and groups,
    a multiple-choice file, and a text-only model's precomputed generations."""
    from _lm_fixtures import gpt2

    root = tmp_path_factory.mktemp("lm-project")
    for name, seed, kw in (("teacher", 0, {}), ("student", 1, {"n_layer": 1, "n_embd": 16}),
                           ("control", 2, {"n_layer": 1, "n_embd": 16})):
        model, tok = gpt2(seed, **kw)
        model.save_pretrained(root / "models" / name, safe_serialization=True)
        tok.save_pretrained(root / "models" / name)
    with open(root / "prompts.jsonl", "w") as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps({"id": f"p{i}", "prompt": t[: len(t) // 2], "reference": t[len(t) // 2:],
                                "kind": "string" if "string" in t else "other"}) + "\n")
    with open(root / "choices.jsonl", "w") as f:
        for i in range(12):
            opts = [TEXTS[i], TEXTS[(i + 3) % 12], TEXTS[(i + 7) % 12]]
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Docstring {i}:", "choices": [" " + o for o in opts],
                                "answer": 0, "half": "a" if i < 6 else "b"}) + "\n")
    with open(root / "vendor.jsonl", "w") as f:  # what a text-only API answered
        for i in range(len(TEXTS)):
            f.write(json.dumps({"id": f"p{i}", "generation": " of the given items"}) + "\n")
    return root


def _config(root: Path, **changes) -> dict:
    cfg = {
        "task": "lm",
        "name": "lm-review",
        "models": {
            "teacher": {"path": "models/teacher", "name": "teacher"},
            "students": [
                {"path": "models/student", "name": "student"},
                {"path": "models/control", "name": "control", "role": "control"},
                {"path": "vendor.jsonl", "name": "vendor"},
            ],
        },
        "data": [{"path": "prompts.jsonl", "groups": ["kind"]}, {"path": "choices.jsonl", "groups": ["half"]}],
        "seed": 0,
        "bootstrap": {"replicates": 50},
        "section_options": {"lm_generation": {"max_new_tokens": 6}, "lm_bias": {"min_group_size": 3}},
    }
    cfg.update(changes)
    return cfg


def _write(root: Path, cfg: dict, name: str = "lm.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_cli_audits_an_lm_config_end_to_end(project, tmp_path):
    path = _write(project, _config(project))
    out = tmp_path / "report"
    assert main(["audit", str(path), "--out", str(out), "--quiet", "--option", "lm_tokens.top_k=5"]) == 0
    text = (out / "results.json").read_text()
    res = json.loads(text)
    assert res["task"] == "lm" and res["teacher"] == "teacher"
    assert [c["student"] for c in res["comparisons"]] == ["student", "control", "vendor"]
    assert [c["role"] for c in res["comparisons"]] == ["student", "control", "student"]
    by = {c["student"]: c for c in res["comparisons"]}
    for section in ("lm_tokens", "lm_generation", "lm_task", "lm_bias", "cost"):
        assert by["student"][section]["available"], (section, by["student"][section].get("reason"))
    # the text-only model: the text sections run, the one skip rule says why the others cannot
    assert by["vendor"]["lm_generation"]["available"]
    for section in ("lm_tokens", "lm_task", "lm_bias"):
        assert by["vendor"][section]["reason"] == (f"the {section} section needs outputs of kind token_top_k; "
                                                   "student 'vendor' gives text")
    # the options: the config's, then --option's, checked by one schema and recorded
    assert res["settings"]["top_k"] == 5 and res["settings"]["max_new_tokens"] == 6
    assert by["student"]["lm_tokens"]["top_k"] == {"teacher": 5, "student": 5}
    # the config is recorded with paths relative to it (results.json does not depend on the checkout)
    assert res["config"]["models"]["teacher"] == {"path": "models/teacher", "name": "teacher"}
    assert res["config"]["data"][0] == {"path": "prompts.jsonl", "groups": ["kind"]}
    assert res["policy"]["name"] == "kdaudit-default-lm"
    assert {f["student"] for f in res["findings"]} <= {"student", "vendor"}  # the control is not judged
    assert (out / "report.html").is_file()
    # the same config through the API gives the same bytes
    again = audit_from_config(path, save=False, progress=False,
                              section_options={"lm_tokens": {"top_k": "5"}})
    assert again.to_json() == text
    # the gate judges it against the recorded policy; without one, against the language-model default
    assert main(["gate", str(out / "results.json")]) in (0, 1)
    bare = dict(res)
    bare.pop("policy")
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    from kdaudit.policy import gate

    assert gate(tmp_path / "bare.json").policy.name == "kdaudit-default-lm"


def test_lm_config_from_the_bundled_corpus_and_a_sections_subset(project, tmp_path):
    cfg = _config(project, data=[{"corpus": "stdlib", "kind": "choices", "n": 12, "n_choices": 3}],
                  sections=["lm_task", "lm_generation"])
    cfg["models"]["students"] = [cfg["models"]["students"][0]]
    # 'policy: default' names the language-model default (judged in full, as a policy a config names always is)
    named = load_config(_write(project, dict(cfg, policy="default"), "corpus-policy.yaml"))
    assert named.policy.name == "kdaudit-default-lm" and len(named.policy.rules) == 5
    loaded = load_config(_write(project, cfg, "corpus.yaml"))
    assert isinstance(loaded, LMAuditConfig) and loaded.policy is None
    r = audit_from_config(loaded, save=False, progress=False)
    res = r.to_dict()
    assert res["settings"]["sections"] == ["lm_generation", "lm_task"]  # the registry's order
    comp = res["comparisons"][0]
    assert comp["lm_task"]["available"]
    assert comp["lm_generation"]["reason"] == ("the lm_generation section needs a prompt set of texts (prompts "
                                               "without choices); none was given")
    assert res["data"]["prompt_sets"][0]["n_prompts"] == 12
    # no policy named: the language-model default, restricted to the sections run
    assert {f["metric"].split(".")[0] for f in res["findings"]} == {"lm_task"}


@pytest.mark.parametrize("change, match", [
    ({"task": "llm"}, r"'task' got 'llm'.*'lm'"),
    ({"references": ["models/student"]}, r"'references'.*language-model audit"),
    ({"models": {"teacher": {"path": "models/nowhere"}, "students": ["models/student"]}},
     r"'models.teacher.path'.*exists"),
    ({"models": {"teacher": "models/teacher", "students": [{"path": "prompts.csv.txt"}]}},
     r"models.students\[0\].path"),
    ({"models": {"teacher": "models/teacher", "students": [{"endpoint": "ftp://x", "model": "m"}]}},
     r"'models.students\[0\].endpoint'.*http"),
    ({"models": {"teacher": "models/teacher", "students": [{"endpoint": "http://127.0.0.1:9/v1"}]}},
     r"'models.students\[0\].model'"),
    ({"models": {"teacher": "models/teacher", "students": [{"endpoint": "http://h/v1", "model": "m",
                                                            "access": "probs"}]}},
     r"'models.students\[0\].access'.*'logprobs' or 'text'"),
    ({"models": {"teacher": "models/teacher", "students": [{"endpoint": "http://h/v1", "model": "m",
                                                            "tokenizer_from": "nobody"}]}},
     r"tokenizer_from.*'teacher'"),
    ({"models": {"teacher": "models/teacher", "students": [{"path": "models/student", "api": "chat"}]}},
     r"'models.students\[0\].api'.*endpoint"),
    ({"models": {"teacher": "models/teacher", "students": ["models/teacher"]}}, r"distinct model names"),
    ({"data": {"corpus": "stdlb"}}, r"'data.corpus'.*stdlib"),
    ({"data": {"corpus": "stdlib", "kind": "choices", "prompt_chars": 10}}, r"'data.prompt_chars'"),
    ({"data": {"path": "prompts.jsonl", "n": 3}}, r"'data.n'.*corpus"),
    ({"sections": ["lm_tokens", "lineage"]}, r"'sections\[1\]'.*reference"),
    ({"section_options": {"lm_tokens": {"top_k": 50}}}, r"section_options.lm_tokens.top_k.*<= 20"),
    ({"section_options": {"lm_task": {"length_normalize": "tokens"}}}, r"length_normalize.*'chars'"),
    ({"precision": "int8"}, r"'precision'"),
])
def test_bad_lm_config_values_name_the_key(project, change, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(project, _config(project, **change), "bad.yaml"))


def test_cli_exits_2_without_traceback_on_bad_lm_input(project, tmp_path, capsys):
    path = _write(project, _config(project, section_options={"lm_bias": {"min_group_sise": 3}}), "bad2.yaml")
    assert main(["audit", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "min_group_sise" in err and "min_group_size" in err and "Traceback" not in err
    ok = _write(project, _config(project), "ok.yaml")
    assert main(["audit", str(ok), "--quiet", "--option", "lm_tokens.top_k=zero", "--out", str(tmp_path)]) == 2
    assert "lm_tokens.top_k" in capsys.readouterr().err
    assert main(["audit", str(ok), "--quiet", "--executor", "ray", "--out", str(tmp_path)]) == 2
    assert "task: lm" in capsys.readouterr().err
    # two prompt sets without choices: refused when the data is read, before any model runs
    two = _write(project, _config(project, data=["prompts.jsonl", "prompts.jsonl"]), "two.yaml")
    assert main(["audit", str(two), "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "at most one prompt set without choices" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """A checkout-like folder holding the quick LM demo's output, its models saved as Hugging Face directories."""
    from kdaudit._demo_lm import run_lm_demo

    root = tmp_path_factory.mktemp("checkout")
    result, paths = run_lm_demo(root / "kdaudit-demo-lm", quick=True, progress=False, save_models=True)
    assert {p.name for p in paths["models"].iterdir()} == {"teacher", "student", "control"}
    return root, result


def test_the_demos_models_audited_from_the_example_config_reproduce_the_demo(quick_demo):
    from kdaudit._demo_lm import QUICK_LM as q

    root, demo = quick_demo
    configs = root / "examples" / "configs"  # the example config where the repository keeps it
    configs.mkdir(parents=True)
    example = yaml.safe_load((REPO / "examples" / "configs" / "lm_audit.yaml").read_text())
    loaded = load_config(_write(configs, example, "lm_audit.yaml"))
    assert isinstance(loaded, LMAuditConfig) and [s.source for s in (loaded.teacher, *loaded.students)] == \
        ["huggingface"] * 3
    # with the quick recipe's prompts and options, auditing the saved directories gives the demo's numbers
    example["data"] = [{"corpus": "stdlib", "kind": "continuations", "n": q.n_prompts, "prompt_chars": q.prompt_chars,
                        "reference_chars": q.reference_chars}, {"corpus": "stdlib", "kind": "choices",
                                                                 "n": q.n_choice}]
    example["section_options"] = {"lm_tokens": {"top_k": q.top_k}, "lm_generation": {"max_new_tokens":
                                                                                   q.max_new_tokens},
                                  "lm_bias": {"min_group_size": q.min_group_size}}
    example["bootstrap"] = {"replicates": q.n_replicates}
    r = audit_from_config(_write(configs, example, "quick.yaml"), save=False, progress=False)
    a, b = demo.to_dict(), r.to_dict()
    for key in ("comparisons", "comparisons_possible", "settings", "definitions", "findings", "verdict", "data"):
        assert a[key] == b[key], key
    assert [m["sha256"] for m in a["models"]] == [m["sha256"] for m in b["models"]]  # the same weights
    assert b["config"]["task"] == "lm" and a["config"]["demo"]["quick"] is True


def test_an_endpoint_in_an_lm_config_shares_a_local_tokenizer(project, tmp_path, monkeypatch):
    """A real OpenAI-compatible server (tests/_lm_server.py, the teacher's weights behind it) named in a config:
    with the teacher's tokenizer its answers compare token by token, the key never reaches the outputs."""
    from test_lm_endpoint import KEY_ENV, SECRET, Server

    (tmp_path / "server").mkdir()
    server = Server(tmp_path / "server")
    try:
        monkeypatch.setenv(KEY_ENV, SECRET)
        cfg = _config(project, cache_dir=str(tmp_path / "cache"), data=["prompts.jsonl"])
        cfg["models"]["students"] = [{"endpoint": server.url, "model": "tiny-gpt2", "name": "api",
                                      "api_key_env": KEY_ENV, "tokenizer_from": "teacher", "max_prompts": 500}]
        path = _write(project, cfg, "endpoint.yaml")
        out = tmp_path / "out"
        assert main(["audit", str(path), "--quiet", "--out", str(out)]) == 0
    finally:
        server.stop()
    written = "".join(p.read_text() for p in out.iterdir())
    assert SECRET not in written
    comp = json.loads((out / "results.json").read_text())["comparisons"][0]
    assert comp["lm_tokens"]["available"], comp["lm_tokens"].get("reason")
    assert comp["lm_tokens"]["headline"]["top1_agreement"]["value"] == pytest.approx(1.0)
    assert comp["lm_generation"]["headline"]["exact_match"]["value"] == pytest.approx(1.0)


def test_gate_default_policy_follows_the_results_task(tmp_path, capsys):
    from kdaudit.policy import DEFAULT_LM_POLICY, DEFAULT_POLICY, gate

    assert main(["gate", "--show-default-policy", "--task", "lm"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == DEFAULT_LM_POLICY
    assert main(["gate", "--show-default-policy"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == DEFAULT_POLICY
    lm_results = REPO / "reports" / "lm" / "results.json"
    assert main(["gate", "--show-default-policy", str(lm_results)]) == 0  # the default the gate would apply
    assert yaml.safe_load(capsys.readouterr().out) == DEFAULT_LM_POLICY
    res = json.loads(lm_results.read_text())
    res.pop("policy")
    bare = tmp_path / "results.json"
    bare.write_text(json.dumps(res))
    judged = gate(bare)
    assert judged.policy.name == "kdaudit-default-lm"
    assert {f.metric for f in judged.findings} == {r["metric"] for r in DEFAULT_LM_POLICY["rules"]}
    assert gate(bare, "default").policy.name == "kdaudit-default-lm"
    res["task"] = "speech"
    bare.write_text(json.dumps(res))
    assert main(["gate", str(bare)]) == 2
    assert "task 'speech'" in capsys.readouterr().err
    assert main(["gate", str(lm_results), "--task", "lm"]) == 2
    assert "--show-default-policy" in capsys.readouterr().err


LM_TOY = '''
import numpy as np

from kdaudit import Estimate
from kdaudit._kinds import OutputKind
from kdaudit.sections import LMSection, Needs, Option


class LengthSection(LMSection):
    """Mean length of the student's continuations over the teacher's (a plugin on the TEXT kind)."""

    name, order, title = "lm_length", 55, "Continuation length"
    needs = Needs(kinds=frozenset({OutputKind.TEXT}), least_access=None, data=frozenset({"texts"}))
    options = (Option("unit", str, "chars", "what is counted", choices=("chars", "words")),)
    default = False  # a plugin opts in

    def definitions(self):
        return {"length_ratio": {"label": "Length ratio", "formula": "mean len(student) / mean len(teacher)",
                                 "higher_is_better": None, "description": "A toy plugin metric."}}

    def compute_lm(self, pair, options):
        size = len if options["unit"] == "chars" else (lambda t: len(t.split()))
        t = np.mean([size(x) for x in pair.teacher.generations.texts])
        s = np.mean([size(x) for x in pair.student.generations.texts])
        return {"available": True, "reason": None, "headline": {"length_ratio": Estimate(float(s / max(t, 1e-9)))}}
'''


def test_a_plugin_section_on_the_text_kind_joins_lm_audits(project, tmp_path, monkeypatch):
    from kdaudit.sections import ENTRY_POINT_GROUP

    (tmp_path / "kdaudit_lm_toy.py").write_text(LM_TOY)
    info = tmp_path / "kdaudit_lm_toy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdaudit-lm-toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nlm_length = kdaudit_lm_toy:LengthSection\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = _config(project, data=["prompts.jsonl"], sections=["lm_generation", "lm_length"],
                      policy={"rules": [{"metric": "lm_length.length_ratio", "min": 0.0}]})
        cfg["models"]["students"] = [{"path": "vendor.jsonl", "name": "vendor"}]
        cfg["section_options"]["lm_length"] = {"unit": "words"}
        r = audit_from_config(_write(project, cfg, "plugin.yaml"), save=False, progress=False)
        res = r.to_dict()
        comp = res["comparisons"][0]
        assert comp["lm_length"]["available"] and comp["lm_length"]["headline"]["length_ratio"]["value"] > 0
        assert res["settings"]["section_options"] == {"lm_length": {"unit": "words"}}
        assert res["definitions"]["lm_length.length_ratio"]["label"] == "Length ratio"
        assert [f.status for f in r.findings] == ["pass"]
        assert ("lm_length", "length_ratio") in set(zip(r.to_frame()["section"], r.to_frame()["metric"]))
        with pytest.raises(ConfigError, match="section_options.lm_length.unit"):
            cfg["section_options"]["lm_length"] = {"unit": "bytes"}
            load_config(_write(project, cfg, "plugin-bad.yaml"))
        # not asked for: a plugin that opts out of the default does not change an audit
        del cfg["sections"], cfg["policy"], cfg["section_options"]["lm_length"]
        plain = audit_from_config(_write(project, cfg, "plugin-default.yaml"), save=False, progress=False)
        assert "lm_length" not in plain.to_dict()["comparisons"][0]
    finally:
        import sys

        sys.modules.pop("kdaudit_lm_toy", None)


def test_lm_config_specs_load_and_record_relative_paths(project):
    cfg = _config(project, data=[{"path": "prompts.jsonl", "rows": 5, "groups": ["kind"]}, "stdlib"])
    cfg["models"]["students"].append({"endpoint": "http://127.0.0.1:9/v1/", "model": "m", "access": "text",
                                      "api_key_env": "SOME_KEY_ENV", "max_prompts": 10})
    loaded = load_config(_write(project, cfg, "specs.yaml"))
    assert [s.source for s in loaded.students] == ["huggingface", "huggingface", "precomputed", "endpoint"]
    texts, corpus = loaded.load_data()
    assert len(texts) == 5 and list(texts.groups.columns) == ["kind"]
    assert corpus.name == "stdlib-continuations" and corpus.references is not None
    recorded = loaded.to_dict()
    assert recorded["models"]["students"][3] == {"endpoint": "http://127.0.0.1:9/v1", "name": "m", "model": "m",
                                                 "access": "text", "api_key_env": "SOME_KEY_ENV", "max_prompts": 10}
    assert recorded["data"] == [{"path": "prompts.jsonl", "groups": ["kind"], "rows": 5},
                                {"corpus": "stdlib", "kind": "continuations"}]
    assert len(corpus) == 120  # the demo's sizes by default
    too_many = load_config(_write(project, _config(project, data={"corpus": "stdlib", "kind": "choices",
                                                                  "n": 5000}), "many.yaml"))
    with pytest.raises(ConfigError, match=r"many.yaml: config key 'data': argument 'n' got 5000; expected at most"):
        too_many.load_data()
    # a classifier config may say so; its schema is unchanged (a classifier model key path in the error)
    with pytest.raises(ConfigError, match=r"'models.teacher.path'.*a model file that exists"):
        load_config({"task": "classifier", "models": {"teacher": "nowhere.pt", "students": ["x.pt"]},
                     "data": "adult"})
