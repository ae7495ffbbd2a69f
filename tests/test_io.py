"""Paths written into results (kdaudit._io.recorded_path)."""


def test_recorded_path_is_relative_under_the_working_directory(tmp_path, monkeypatch):
    """A result records where a file came from without recording where the checkout lives (two checkouts of the
    same audit write the same bytes)."""
    from kdaudit._io import recorded_path

    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "models" / "student.safetensors"
    assert recorded_path(inside) == "models/student.safetensors"
    assert recorded_path("models/student.safetensors") == "models/student.safetensors"
    outside = tmp_path.parent / "elsewhere.onnx"
    assert recorded_path(outside) == str(outside)
