"""One typed job config: loaded from YAML, overridden with ``--set a.b=c``, validated by pydantic.

Every section forbids unknown keys, so a typo in a sweep or a job file fails loudly with its
dotted path instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from raykd.config.experiment import TrackingSection, TuneSection
from raykd.config.messages import format_errors, key_lines
from raykd.config.sections import (
    AugmentSection,
    CandidatesSection,
    DataSection,
    EvalSection,
    JobConfig,
    MiningSection,
    RaySection,
    StudentSection,
    TeacherMember,
    TeacherSection,
    TeacherTrainSection,
    TrainerSection,
    TrainSection,
)
from raykd.config.specs import (
    ActorPoolSpec,
    Bm25Spec,
    EncoderSpec,
    IndexSpec,
    KlLoss,
    MarginMseLoss,
    MlflowSpec,
    RankNetLoss,
    Section,
    TeacherActors,
    WandbSpec,
)

__all__ = [
    "ActorPoolSpec",
    "AugmentSection",
    "Bm25Spec",
    "CandidatesSection",
    "ConfigError",
    "DataSection",
    "EncoderSpec",
    "EvalSection",
    "IndexSpec",
    "JobConfig",
    "KlLoss",
    "MarginMseLoss",
    "MlflowSpec",
    "MiningSection",
    "RankNetLoss",
    "RaySection",
    "Section",
    "StudentSection",
    "TeacherActors",
    "TeacherMember",
    "TeacherSection",
    "TeacherTrainSection",
    "TrackingSection",
    "TrainSection",
    "TrainerSection",
    "TuneSection",
    "WandbSpec",
    "apply_override",
    "dump_yaml",
    "load_config",
    "reference_markdown",
    "replace_reference_block",
    "validate",
]


class ConfigError(ValueError):
    """A job config that does not validate; the message names each dotted path and reason."""


def apply_override(raw: dict[str, Any], assignment: str) -> str:
    """Apply ``a.b.c=value`` to a raw config dict (the value parsed as YAML); returns the path."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected dotted.path=value")
    dotted, value = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty path component")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML: {err}") from None
    return ".".join(parts)


def validate(
    raw: dict[str, Any],
    source: str = "<dict>",
    lines: dict[tuple[str, ...], int] | None = None,
    overridden: frozenset[str] = frozenset(),
) -> JobConfig:
    """The JobConfig of a raw dict; a ConfigError naming ``source`` and each bad dotted path,
    with its line in ``source`` (``lines``, from ``key_lines``) or the ``--set`` that gave it."""
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, lines or {}, overridden)) from None


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, run_dir: str | None = None
) -> JobConfig:
    """Load a job YAML, apply ``--set`` overrides and ``--run-dir``, then validate."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        try:
            raw = yaml.safe_load(text)
            lines = key_lines(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            what = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{where}: not valid YAML: {what}") from None
        if raw is None:
            raise ConfigError(f"{path}: the config file is empty (see jobs/ for examples)")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    overridden = set()
    for assignment in overrides or []:
        overridden.add(apply_override(raw, assignment))
    if run_dir is not None:
        raw["run_dir"] = run_dir
    return validate(raw, source, lines, frozenset(overridden))


def dump_yaml(cfg: JobConfig) -> str:
    """The whole config as YAML, every default spelled out (what a run dir's job.yaml holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def reference_markdown() -> str:
    """The config reference, generated from the models (README section)."""
    out: list[str] = []

    def row(path: str, type_name: str, default: Any, doc: str) -> None:
        cells = (f"`{path}`", f"`{type_name}`", f"`{default!r}`", doc)
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    def walk(
        model: type[BaseModel], prefix: str, skip: tuple[str, ...] = (), note: str = ""
    ) -> None:
        for name, field in model.model_fields.items():
            if name in skip:
                continue
            ann = field.annotation
            path = f"{prefix}{name}"
            sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if sub is not None and sub is not IndexSpec:
                walk(sub, path + ".")
                continue
            optional = _optional_section(ann)
            if optional is not None:  # a section that is off by default: its keys when set
                row(path, f"{optional.__name__} | None", None, field.description or "")
                walk(optional, path + ".")
                continue
            default = field.get_default(call_default_factory=True)
            if field.discriminator:  # a union of sections: its tag, then each variant's keys
                variants = get_args(ann)
                tags = [v.model_fields["name"].default for v in variants]
                row(f"{path}.name", " | ".join(tags), default.name, field.description or "")
                for v in variants:
                    tag = v.model_fields["name"].default
                    walk(v, f"{path}.", skip=("name",), note=f"({name}.name {tag}) ")
                continue
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
            row(path, type_name, default, note + (field.description or ""))

    walk(JobConfig, "")
    header = "| key | type | default | meaning |\n|---|---|---|---|"
    return header + "\n" + "\n".join(out)


def _optional_section(ann: Any) -> type[BaseModel] | None:
    """The section of an ``X | None`` annotation, else None."""
    args = [a for a in get_args(ann) if a is not type(None)]
    if len(args) == 1 and len(get_args(ann)) == 2:
        sub = args[0]
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            return sub
    return None


REFERENCE_START = "<!-- config-reference:start -->"
REFERENCE_END = "<!-- config-reference:end -->"


def replace_reference_block(path: str | Path) -> None:
    """Regenerate the config reference between the README's markers."""
    text = Path(path).read_text(encoding="utf-8")
    head, rest = text.split(REFERENCE_START, 1)
    _, tail = rest.split(REFERENCE_END, 1)
    body = f"{REFERENCE_START}\n{reference_markdown()}\n{REFERENCE_END}"
    Path(path).write_text(head + body + tail, encoding="utf-8")
