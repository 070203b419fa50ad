"""``raykd``: one command per stage, ``run`` for all of them, ``demo``, ``tune``, ``config``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from importlib import resources
from pathlib import Path

from raykd import console
from raykd.config import ConfigError, JobConfig, dump_yaml, load_config
from raykd.console import console_handler
from raykd.errors import InputError, StageError
from raykd.on_ray.session import LOOPBACK_ENV, ensure_ray
from raykd.run_dir import JOB_FILE, RunDir
from raykd.run_lock import acquire
from raykd.stages.pipeline import STAGES, run_pipeline, run_stage, stage_by_name
from raykd.tracking import require_extras

# Named, not __name__: under `python -m raykd.cli` that is "__main__", outside raykd's loggers.
log = logging.getLogger("raykd.cli")


def _common(p: argparse.ArgumentParser, *, config_required: bool = True) -> None:
    p.add_argument(
        "--config",
        "-c",
        required=config_required,
        help="job YAML (see jobs/)" + ("" if config_required else "; default: the run dir's"),
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="a.b=VALUE",
        help="override a config field (repeatable); the value is parsed as YAML",
    )
    p.add_argument("--run-dir", help="override run_dir (local path or s3:// / gs:// URI)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.add_argument(
        "--force-unlock",
        action="store_true",
        help="break the run dir's lock left by a command that is gone",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raykd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage.name, help=f"run the {stage.name} stage")
        _common(p, config_required=False)
        p.add_argument("--force", action="store_true", help="run even if the manifest matches")
    p = sub.add_parser("run", help="run every stage in order, skipping those that are current")
    _common(p)
    p.add_argument("--until", help="stop after this stage")
    p = sub.add_parser("demo", help="run the whole pipeline on the built-in demo collection")
    _common(p, config_required=False)
    p = sub.add_parser("tune", help="Ray Tune sweep over a search space")
    _common(p)
    p.add_argument("--space", required=True, help="search-space YAML (see tune_spaces/)")
    p = sub.add_parser("plan", help="a job's cost before launch, from counts and hardware")
    _common(p, config_required=False)
    _plan_arguments(p)
    p = sub.add_parser("config", help="config utilities")
    csub = p.add_subparsers(dest="config_command", required=True)
    show = csub.add_parser("show", help="print the resolved config")
    _common(show)
    ref = csub.add_parser("reference", help="print the config reference (markdown)")
    ref.add_argument("--write", metavar="README", help="replace the reference block of a file")
    return parser


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hardware", default="cpu", help="cpu, or [COUNTx]GPU: H100, 8xH100, A100...")
    p.add_argument(
        "--measured", metavar="JSON", help="rates from the bench scripts' --measured-out"
    )
    p.add_argument("--target-hours", type=float, default=1.0, help="scoring deadline for GPUs")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    for name, kind in (
        ("passages", int),
        ("train-queries", int),
        ("eval-queries", int),
        ("train-rows", int),
        ("pairs", int),
        ("query-tokens", float),
        ("passage-tokens", float),
    ):
        p.add_argument(f"--{name}", type=kind, help="default: the run dir's manifests or sample")


def _plan(args: argparse.Namespace) -> int:
    import json

    from raykd.planning import Given, format_plan, make_plan
    from raykd.planning.hardware import parse_hardware

    cfg = _load(args)
    parse_hardware(args.hardware)  # a typo fails before the run dir is looked for
    counted = None not in (args.passages, args.train_queries, args.eval_queries)
    # Counts given whole need no run dir (an s3:// one may not be reachable from here).
    run = None if counted else RunDir.open(cfg.run_dir)
    given = Given(
        passages=args.passages,
        train_queries=args.train_queries,
        eval_queries=args.eval_queries,
        train_rows=args.train_rows,
        pairs=args.pairs,
        query_tokens=args.query_tokens,
        passage_tokens=args.passage_tokens,
    )
    plan = make_plan(cfg, args.hardware, run, given, args.measured, args.target_hours)
    print(json.dumps(plan.as_dict(), indent=2) if args.json else format_plan(plan))
    return 0


def demo_config_path() -> str:
    return str(resources.files("raykd.data").joinpath("demo_job.yaml"))


def _load(args: argparse.Namespace) -> JobConfig:
    config = args.config
    if config is None:
        if not args.run_dir:
            raise ConfigError("give --config, or --run-dir of a run that has one")
        config = RunDir.open(args.run_dir).local_copy(JOB_FILE)
        if config is None:
            raise ConfigError(f"{args.run_dir}: no {JOB_FILE}; give --config")
    return load_config(config, args.overrides, args.run_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    handler = None if args.command in ("config", "plan") else _open_log(args.command)
    saved_fd = None if handler is None or args.verbose else _stderr_to_log()
    out = os.fdopen(os.dup(saved_fd), "w", buffering=1) if saved_fd is not None else None
    screen = console_handler(args.verbose, out)
    root.addHandler(screen)
    terminated: list[int] = []
    previous = _unwind_on_sigterm(terminated)
    try:
        code = _dispatch(args)
        if LOG_FILE is not None:  # a failure names it instead, in its "full log" line
            log.info("log: %s", LOG_FILE, extra=console.STORY)
        return code
    except (ConfigError, InputError, StageError) as err:
        _fail(str(err))
        return 2
    except KeyboardInterrupt as err:
        stage = getattr(err, "stage", None)
        where = f" during {stage}" if stage else ""
        resume = f"; `raykd run` resumes from {stage}" if stage else ""
        what = "stopped (SIGTERM)" if terminated else "interrupted"
        _fail(f"{what}{where}{resume}", exc=False)
        return 143 if terminated else 130
    except Exception as err:  # the last resort: one line here, the traceback in the log
        _fail(f"{type(err).__name__}: {err}".splitlines()[0])
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        root.removeHandler(screen)
        if saved_fd is not None:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            out.close()
        console_handler(False)  # library callers after main() get the plain defaults back
        _close_log(handler)


def _unwind_on_sigterm(terminated: list[int]):
    """SIGTERM (``ray job stop``, a batch scheduler) unwinds like Ctrl-C: the stage's staging
    folder is discarded and the run-dir lease released, where the default action would leave
    the lease to expire. Returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


# The file that gets this command's full log (raykd's and the traceback of a failure), once the
# run dir is known.
LOG_FILE: Path | None = None
_FILE_HANDLER: logging.FileHandler | None = None


def _fail(message: str, *, exc: bool = True) -> None:
    """The error in one line on the console; the traceback goes to the log file, named below
    it."""
    if LOG_FILE is not None:
        with LOG_FILE.open("a", encoding="utf-8") as f:
            f.write(f"raykd: error: {message}\n")
            if exc:
                f.write(traceback.format_exc())
    print(f"raykd: error: {message}", file=console.stream())
    if LOG_FILE is not None:
        print(f"raykd: full log: {LOG_FILE}", file=console.stream())


def _stderr_to_log() -> int | None:
    """Point file descriptor 2 at the log file and return a copy of the old one (None when
    stderr is not this process's own, as under pytest's capture).

    Ray's C++ core, Ray Data's progress bars and Python warnings write to stderr; the console
    then gets only what raykd writes to the copy.
    """
    if LOG_FILE is None or sys.stderr is not sys.__stderr__:
        return None
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    sys.stderr.flush()
    saved = os.dup(fd)
    target = os.open(LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(target, fd)
    os.close(target)
    return saved


def log_dir() -> Path:
    """Where a command starts its log: ``RAYKD_LOG_DIR``, else ``$XDG_STATE_HOME/raykd/logs``
    (by default ``~/.local/state/raykd/logs``). Once it holds the run dir's lock, the log moves
    to ``<run>/logs/`` (``_log_beside``)."""
    if os.environ.get("RAYKD_LOG_DIR"):
        return Path(os.environ["RAYKD_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "raykd" / "logs"


def _open_log(command: str) -> logging.Handler:
    """Log this command at INFO and up to its own file, whatever the console shows."""
    global LOG_FILE, _FILE_HANDLER
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    LOG_FILE = folder / f"{stamp}.log"
    handler = logging.FileHandler(LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)  # Ray Data logs at DEBUG
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    _FILE_HANDLER = handler
    return handler


def _log_beside(run: RunDir, handler: logging.Handler | None) -> None:
    """Move this command's log into ``<run>/logs/``.

    Only once the command holds the run dir (a command refused up front leaves no trace there),
    only for a local run dir (an object store cannot be appended to) and not when
    ``RAYKD_LOG_DIR`` asks for a folder of its own. The open file moves with its name: every
    writer (the handler, Ray's C++ core on stderr) keeps writing to it.
    """
    global LOG_FILE
    if LOG_FILE is None or not isinstance(handler, logging.FileHandler):
        return
    if run.is_local and not os.environ.get("RAYKD_LOG_DIR"):
        dest = Path(run.path("logs")) / LOG_FILE.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        # On another filesystem the rename fails and the log stays where it started.
        with contextlib.suppress(OSError):
            os.rename(LOG_FILE, dest)
            handler.baseFilename = str(dest)
            LOG_FILE = dest


def _close_log(handler: logging.Handler | None) -> None:
    global LOG_FILE, _FILE_HANDLER
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()
    LOG_FILE = _FILE_HANDLER = None


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        if args.config_command == "reference":
            from raykd.config import reference_markdown, replace_reference_block

            if args.write:
                replace_reference_block(args.write)
            else:
                print(reference_markdown())
        else:
            print(dump_yaml(_load(args)), end="")
        return 0
    if args.command == "plan":
        return _plan(args)

    if args.command == "demo":
        args.config = args.config or demo_config_path()
        args.run_dir = args.run_dir or "runs/demo"
    cfg = _load(args)
    # A tracker's missing package fails here, before any stage work (and not on Ray's workers,
    # which validate the config but never track).
    require_extras(cfg.tracking)
    if not (args.address or cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        # Before anything imports ray: keeps a local Ray's ports on loopback (on_ray.session).
        os.environ.setdefault(LOOPBACK_ENV, "0")
    run = RunDir.open(cfg.run_dir)

    def start_ray() -> None:
        ensure_ray(cfg.ray, args.address)

    with acquire(run, force=args.force_unlock):
        _log_beside(run, _FILE_HANDLER)
        if args.command in ("run", "demo"):
            ran = run_pipeline(cfg, run, until=getattr(args, "until", None), before_run=start_ray)
            log.info("stages run: %s", ", ".join(ran) or "none (all current)")
            _print_summary(run)
        elif args.command == "tune":
            from raykd.stages.tune import run_tune

            start_ray()
            run_tune(cfg, run, args.space)
        else:
            stage = stage_by_name(args.command)
            run_stage(stage, cfg, run, force=args.force, before_run=start_ray)
    return 0


def _print_summary(run: RunDir) -> None:
    if run.exists("metrics.json"):
        from raykd.evaluation.table import format_table

        print(format_table(run.read_json("metrics.json")), flush=True)
    if run.exists("report/index.html"):
        print(f"report: {run.uri_of('report/index.html')}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
