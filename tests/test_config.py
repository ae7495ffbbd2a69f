"""Audit config files: validation messages name the key path, the value and what is accepted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from kdaudit import ConfigError
from kdaudit._config import load_config, load_data_file, parse_config


@pytest.fixture()
def files(tmp_path):
    for name in ("t.pt", "s1.pt", "s2.onnx", "ref.pt"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def cfg(**over):
    base = {"models": {"teacher": "t.pt", "students": ["s1.pt", {"path": "s2.onnx", "name": "onnx student"}]},
            "data": {"dataset": "adult", "split": "test"}}
    base.update(over)
    return base


def parse(raw, base):
    return parse_config(raw, source="audit.yaml", base_dir=base)


def test_valid_config_resolves_paths_and_defaults(files):
    c = parse(cfg(seed=3, bootstrap={"replicates": 200}, sensitive=["sex"]), files)
    assert c.teacher[0].path == files / "t.pt"
    assert [s.name for s in c.students] == [None, "onnx student"]
    assert c.seed == 3 and c.n_replicates == 200 and c.bootstrap().n_replicates == 200
    assert c.sections == ("agreement", "calibration", "bias", "fingerprint", "cost")
    d = c.to_dict()
    assert d["models"]["students"][1] == {"path": "s2.onnx", "name": "onnx student"}  # relative, no machine paths
    assert d["data"] == {"dataset": "adult", "split": "test"}


def test_negative_controls_and_their_mode_round_trip(files):
    models = {"teacher": "t.pt", "students": "s1.pt", "references": ["ref.pt"],
              "controls": [{"path": "ref.pt", "name": f"control {i}"} for i in range(19)]}
    c = parse(cfg(models=models, lineage={"controls_mode": "calibrate"}), files)
    assert len(c.controls) == 19 and c.controls[0].path == files / "ref.pt"
    d = c.to_dict()
    assert d["models"]["controls"][18] == {"path": "ref.pt", "name": "control 18"} and d["lineage"] == {
        "controls_mode": "calibrate"}
    assert parse(d, files).to_dict() == d


def test_positive_controls_round_trip_and_need_references(files):
    models = {"teacher": "t.pt", "students": "s1.pt", "references": ["ref.pt"],
              "positive_controls": [{"path": "s1.pt", "name": "own student"}, "ref.pt"]}
    c = parse(cfg(models=models), files)
    assert [m.name for m in c.positive_controls] == ["own student", None]
    d = c.to_dict()
    assert d["models"]["positive_controls"] == [{"path": "s1.pt", "name": "own student"}, {"path": "ref.pt"}]
    assert parse(d, files).to_dict() == d
    with pytest.raises(ConfigError, match=r"'models\.positive_controls' got \['own student'.*only with models\.references"):
        parse(cfg(models={"teacher": "t.pt", "students": "s1.pt", "positive_controls": models["positive_controls"]}),
              files)
    with pytest.raises(ConfigError, match=r"distinct model names"):
        parse(cfg(models={**models, "students": [{"path": "s1.pt", "name": "own student"}]}), files)


def test_references_enable_lineage_by_default(files):
    c = parse(cfg(models={"teacher": ["t.pt", "t.pt"], "students": "s1.pt", "references": ["ref.pt"]}), files)
    assert len(c.teacher) == 2 and "lineage" in c.sections


@pytest.mark.parametrize(
    ("raw", "match"),
    [(cfg(modles={}), r"'modles'.*did you mean 'models'"),
     (cfg(models={"teacher": "t.pt", "students": ["s1.pt", {"path": "nope.pt"}]}),
      r"'models\.students\[1\]\.path' got 'nope\.pt'; expected a model file that exists"),
     (cfg(models={"teacher": "t.pt", "students": ["s1.pt", {"pth": "s1.pt"}]}),
      r"'models\.students\[1\]\.pth'.*did you mean 'path'"),
     (cfg(models={"teacher": "t.pt"}), r"'models\.students'.*required"),
     (cfg(models={"teacher": "t.pt", "students": [{"path": "s1.pt", "trust": "yes"}]}),
      r"'models\.students\[0\]\.trust' got 'yes'; expected true or false"),
     (cfg(models={"teacher": "t.pt", "students": [{"path": "s1.pt", "arch": "nocolon"}]}), r"registered architecture"),
     (cfg(models={"teacher": "t.pt", "students": [{"path": "s1.pt", "access": "top_k"}]}),
      r"'models\.students\[0\]\.access' got 'top_k'.*'top_k:K'"),
     (cfg(data={"dataset": "adlut"}), r"'data\.dataset' got 'adlut'.*did you mean 'adult'"),
     (cfg(data={"dataset": "adult", "split": "validation"}), r"'data\.split'.*'train' or 'test'"),
     (cfg(data={"dataset": "adult", "label": "y"}), r"'data\.label'.*applies to data files"),
     (cfg(data={"path": "missing.csv"}), r"'data\.path' got 'missing\.csv'"),
     (cfg(data={"dataset": "adult", "path": "t.pt"}), r"exactly one of 'dataset'"),
     (cfg(sections=["agreement", "calibraton"]), r"'sections\[1\]'.*did you mean 'calibration'"),
     (cfg(sections=["lineage"]), r"'lineage' only with models\.references"),
     (cfg(seed=-1), r"'seed' got -1; expected an integer >= 0"),
     (cfg(bootstrap={"replicates": 10, "levl": 0.9}), r"'bootstrap\.levl'.*did you mean 'level'"),
     (cfg(bootstrap={"level": 95}), r"'bootstrap\.level' got 95"),
     (cfg(policy="nopolicy.yaml"), r"'policy' got 'nopolicy\.yaml'"),
     (cfg(policy={"rules": [{"metric": "agreement.top1", "minimum": 0.9}]}), r"did you mean 'min'"),
     (cfg(lineage={"alpha": 2}), r"'lineage\.alpha' got 2"),
     (cfg(models={"teacher": "t.pt", "students": "s1.pt", "controls": ["ref.pt"]}),
      r"'models\.controls'.*only with models\.references"),
     (cfg(models={"teacher": "t.pt", "students": "s1.pt", "references": ["ref.pt"], "controls": ["ref.pt"]},
          lineage={"controls_mode": "calibrated"}), r"'lineage\.controls_mode' got 'calibrated'.*did you mean"),
     (cfg(models={"teacher": "t.pt", "students": "s1.pt", "references": ["ref.pt"], "controls": ["ref.pt"]},
          lineage={"controls_mode": "calibrate"}),
      r"'lineage\.controls_mode'.*at least 19 models under models\.controls \(1 given\)"),
     (cfg(lineage={"controls_mode": "require"}), r"'lineage\.controls_mode'.*at least 1 models"),
     (cfg(models={"teacher": {"path": "t.pt", "name": "m"}, "students": [{"path": "s1.pt", "name": "m"}]}),
      r"distinct model names"),
     (cfg(models={"teacher": "t.pt", "students": [{"path": "s1.pt", "options": {"trust": True}}]}),
      r"'models\.students\[0\]\.options\.trust' got True; expected no such key"),
     (cfg(policy={"rules": [{"metric": "agreement.top1", "min": 10 ** 400}]}), r"'policy\.rules\[0\]\.min'.*finite"),
     ([1, 2], r"a mapping with 'models' and 'data'")],
)
def test_validation_errors_name_key_path_value_and_accepted(files, raw, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse(raw, files)
    assert str(info.value).startswith("audit.yaml: ")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_file_relative_to_its_directory(files):
    (files / "sub").mkdir()
    (files / "sub" / "audit.yaml").write_text(yaml.safe_dump(
        {"models": {"teacher": "../t.pt", "students": ["../s1.pt"]}, "data": "digits", "out": "report"}))
    c = load_config(files / "sub" / "audit.yaml")
    assert c.teacher[0].path == (files / "sub" / ".." / "t.pt") and c.out == files / "sub" / "report"
    assert c.data.dataset == "digits"


def test_data_files_npz_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.integers(0, 2, 20)
    np.savez(tmp_path / "d.npz", X=X, y=y, sensitive_sex=np.array(["F", "M"] * 10), classes=np.array(["no", "yes"]))
    d = load_data_file(tmp_path / "d.npz")
    assert d.classes == ("no", "yes") and list(d.sensitive.columns) == ["sex"] and np.array_equal(d.y_true, y)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=np.where(y == 1, "yes", "no"), sex="F",
                                                             rid=np.arange(100, 120))
    frame.to_csv(tmp_path / "d.csv", index=False)
    d2 = load_data_file(tmp_path / "d.csv", label="label", sensitive=("sex",), id="rid")
    assert d2.X.shape == (20, 3) and d2.classes == ("no", "yes") and np.array_equal(d2.y_true, y)
    assert d2.ids[0] == 100
    with pytest.raises(ConfigError, match="no column 'income'"):
        load_data_file(tmp_path / "d.csv", label="income")


def test_unreadable_data_files_are_config_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    np.savez(tmp_path / "ok.npz", X=np.zeros((3, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(ConfigError, match=r"no array 'row_id' \(data\.id\)"):
        load_data_file(tmp_path / "ok.npz", id="row_id")  # a named id array must exist, as a csv column must
    for name in ("bad.npz", "bad.parquet"):
        with pytest.raises(ConfigError, match=rf"data file .*{name}.* could not be read"):
            load_data_file(tmp_path / name)


def test_restrict_access_reveals_only_top_k_or_labels():
    from kdaudit._config import restrict_access
    from kdaudit.models import PrecomputedModel

    p = np.random.default_rng(0).dirichlet(np.ones(5), size=30).astype(np.float32)
    p[0] = 0.2  # a tie: the lower class indices are kept
    model = PrecomputedModel(p, name="m", kind="probabilities")
    top2 = restrict_access(model, "top_k:2").predict(np.arange(30))
    kept = np.argsort(-p, axis=1, kind="stable")[:, :2]
    expected = np.zeros_like(p)
    np.put_along_axis(expected, kept, np.take_along_axis(p, kept, axis=1), axis=1)
    np.testing.assert_array_equal(top2, expected)
    np.testing.assert_array_equal(top2[0], np.array([0.2, 0.2, 0, 0, 0], dtype=np.float32))
    boxed = restrict_access(model, "labels", query_budget=100)
    assert boxed.access.value == "labels" and boxed.inner is model
    np.testing.assert_array_equal(boxed.predict(np.arange(30)), p.argmax(axis=1))  # labels only


def test_probes_take_one_spec_or_a_list(files):
    one = parse(cfg(probes={"dataset": "adult", "split": "train", "rows": 100}), files)
    assert len(one.probes) == 1 and one.probes[0].rows == 100
    (files / "public.csv").write_text("a,b\n1,2\n")
    two = parse(cfg(probes=[{"dataset": "adult", "split": "train"}, "public.csv"]), files)
    assert [p.dataset for p in two.probes] == ["adult", None] and two.probes[1].path == files / "public.csv"
    d = two.to_dict()
    assert d["probes"] == [{"dataset": "adult", "split": "train"}, {"path": "public.csv"}]
    assert parse(d, files).to_dict() == d  # the recorded config parses back to itself
    assert "probes" not in parse(cfg(), files).to_dict()
    with pytest.raises(ConfigError, match=r"'probes' got \[\]"):
        parse(cfg(probes=[]), files)
    with pytest.raises(ConfigError, match=r"'probes\[1\]\.path' got 'missing\.csv'"):
        parse(cfg(probes=["public.csv", {"path": "missing.csv"}]), files)
