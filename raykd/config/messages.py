"""What a config error says: the dotted key, the YAML line or ``--set`` that gave it, and for an
unknown key the key it most likely meant, or where a key that moved now lives."""

from __future__ import annotations

import difflib
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from raykd.config.sections import JobConfig

# Keys that moved, so an old job file's error says where to.
MOVED = {
    "train.teacher_temperature": "train.loss.teacher_temperature (with train.loss.name kl)",
    "train.student_temperature": "train.loss.student_temperature (with train.loss.name kl)",
    **{f"mining.bm25_{k}": f"mining.bm25.{k}" for k in ("k1", "b", "stopwords", "stemmer")},
    **{f"mining.dense_{k}": f"mining.dense.{k}" for k in ("model", "pooling", "normalize")},
    "mining.dense_max_length": "mining.dense.max_length",
    **{f"teacher.{k}": f"teacher.bm25.{k}" for k in ("k1", "b", "stopwords", "stemmer")},
    **{
        f"{s}.{k}": f"{s}.actors.{k}"
        for s in ("mining", "teacher", "eval")
        for k in ("batch_size", "dtype", "min_actors", "max_actors", "torch_threads")
    },
    "mining.use_gpu": "mining.actors.num_gpus",
    "eval.use_gpu": "eval.actors.num_gpus",
    "teacher.num_gpus_per_actor": "teacher.actors.num_gpus",
}


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key of a YAML document, by its key path."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, str(key.value))
                out[here] = key.start_mark.line + 1
                walk(value, here)

    walk(yaml.compose(text), ())
    return out


def _walk(loc: tuple[str, ...]) -> tuple[tuple[str, ...], Any]:
    """``loc`` without the tags pydantic inserts after a discriminated union's field (a YAML
    file never spells them), and the model or type the path ends at (None: not a field)."""
    model: Any = JobConfig
    out: list[str] = []
    parts = iter(loc)
    for part in parts:
        field = getattr(model, "model_fields", {}).get(part) if model is not None else None
        out.append(part)
        if field is None:
            model = None
            continue
        model = field.annotation
        if field.discriminator:
            tag = next(parts, None)
            model = next(
                (v for v in get_args(model) if v.model_fields["name"].default == tag), None
            )
    return tuple(out), model


def did_you_mean(loc: tuple[str, ...]) -> str | None:
    """The field of the section at ``loc[:-1]`` closest to the unknown key ``loc[-1]``."""
    _, model = _walk(loc[:-1])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def _origin(
    loc: tuple[str, ...], source: str, lines: dict[tuple[str, ...], int], overridden: frozenset
) -> str:
    """Where a key's value came from: ``--set``, else its line in ``source``, else ``source``."""
    path = ".".join(loc)
    if any(o == path or o.startswith(path + ".") for o in overridden):
        return "--set"
    for n in range(len(loc), 0, -1):
        if ".".join(loc[:n]) in overridden:
            return "--set"
        if loc[:n] in lines:
            return f"{source}:{lines[loc[:n]]}"
    return source


def format_errors(
    err: ValidationError,
    source: str,
    lines: dict[tuple[str, ...], int],
    overridden: frozenset[str] = frozenset(),
) -> str:
    """A few lines: one per error, ``<file>:<line>: <dotted.key>: <reason>``."""
    out = [f"invalid config ({source}):"]
    for e in err.errors():
        raw_loc = tuple(str(p) for p in e["loc"])
        loc, _ = _walk(raw_loc)
        path = ".".join(loc)
        reason = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            reason = "unknown key"
            tag = next((r for r, c in zip(raw_loc, loc, strict=False) if r != c), None)
            if tag is not None:  # a key of another variant of a union (train.loss)
                reason += f" for name {tag!r}"
            if path in MOVED:
                reason += f"; it is now {MOVED[path]}"
            elif (close := did_you_mean(raw_loc)) is not None:
                reason += f"; did you mean {close!r}?"
        if not loc:  # cross-section checks: each line names its keys
            out.extend(f"  {line}" for line in reason.splitlines())
        else:
            out.append(f"  {_origin(loc, source, lines, overridden)}: {path}: {reason}")
    return "\n".join(out)
