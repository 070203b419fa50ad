"""Starting or joining Ray: the only place the driver calls ``ray.init``."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator

from raykd import console
from raykd.config import ConfigError, RaySection

log = logging.getLogger(__name__)

# With clusters disabled, Ray keeps the node address (and so every listening port) on loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def use_parquet_reader_v1() -> None:
    """Make this process's Ray Data reads (and a local Ray's workers', which inherit the
    environment) use the V1 Parquet reader. Called wherever raykd builds datasets: the driver
    on joining Ray, and each Tune trial.

    Ray's default reader (V2) lists files in a task that holds a CPU while it waits for
    footer-reader actors, which need a free CPU to start: two reads at once on a small Ray (a
    sweep's two trials on 2 CPUs) held both CPUs and waited for ever, and each read starts up to
    32 such actors. V1, Ray's documented switch, reads footers without actors: the demo's build
    of 449 rows took 18.5 s with it, 72 s with V2.
    """
    import ray.data

    os.environ["RAY_DATA_USE_DATASOURCE_V2"] = "0"
    ray.data.DataContext.get_current().use_datasource_v2 = False


def ensure_ray(cfg: RaySection, address: str | None = None) -> None:
    """Join ``address`` / ``cfg.address`` / ``RAY_ADDRESS``, or start a loopback-only local Ray."""
    target = address or cfg.address or os.environ.get("RAY_ADDRESS")
    if not target:
        if "ray" in sys.modules and os.environ.get(LOOPBACK_ENV) != "0":
            log.warning("ray was imported before raykd could keep it on loopback")
        os.environ.setdefault(LOOPBACK_ENV, "0")
    import ray

    use_parquet_reader_v1()
    if ray.is_initialized():
        return
    if target:
        source = "--address" if address else "ray.address" if cfg.address else "RAY_ADDRESS"
        _check_reachable(target, source)
        try:
            with _keeping_sigterm():
                ray.init(address=target)
        except ConnectionError:  # after ~20 s of Ray's retries and warnings
            raise ConfigError(
                f"{source} {target}: no Ray cluster answers there (a server does, but not Ray's "
                f"GCS; {_fix(source)})"
            ) from None
        _route_ray_logs()
        _quiet_workers()
        log.info("joined Ray cluster at %s", target)
        return
    # The dashboard serves the State API, which Ray Train's placement-group cleaner needs: without
    # it, a Tune trial stopped inside fit() keeps its workers' reservation. It binds to loopback.
    _route_ray_logs()
    with private_tmpdir(), _keeping_sigterm(), workers_know_the_cluster() as pinned:
        ray.init(
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
            **pinned,
        )
    _route_ray_logs()
    _quiet_workers()
    log.info("started a local Ray on loopback with %s", ray.cluster_resources())


@contextlib.contextmanager
def workers_know_the_cluster() -> Iterator[dict]:
    """``ray.init`` keyword arguments for a local Ray whose workers get ``RAY_ADDRESS`` naming it
    (its GCS on a free port chosen here, through ``RAY_GCS_SERVER_PORT`` while Ray starts).

    Ray's State API in a worker finds its cluster from ``RAY_ADDRESS``, else by listing this
    machine's GCS processes, and fails when it finds two ("Found multiple active Ray
    instances": another user's Ray, a test cluster). Ray Train's placement-group cleaner calls it
    to release the workers' reservation of a Tune trial stopped inside ``fit()``: failing, it
    leaked 0.5 CPU per trial ASHA stopped, and on 2 CPUs the next trial's 1-CPU read never ran.
    """
    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = ray.util.get_node_ip_address()  # what the node will listen on (loopback here)
    saved = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        yield {"runtime_env": {"env_vars": {"RAY_ADDRESS": f"{host}:{port}"}}}
    finally:
        if saved is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = saved


@contextlib.contextmanager
def _keeping_sigterm() -> Iterator[None]:
    """``ray.init`` installs Ray's C++ crash handler for SIGTERM, which prints a stack and kills
    the driver; the CLI's handler (unwind: discard staging, release the lease) is put back."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


# How long the probe of a cluster's address waits for an answer.
PROBE_S = 5.0


def _check_reachable(target: str, source: str) -> None:
    """Raise ConfigError, naming ``source`` (--address, ray.address or RAY_ADDRESS), when nothing
    listens at the Ray address ``target``: ``ray.init`` would retry for minutes, printing Ray's
    own warnings, before it gave up."""
    from ray._private.services import canonicalize_bootstrap_address

    fix = _fix(source)
    if "://" in target:  # Ray Client: ray://host[:port], its server on 10001 by default
        hostport = target.split("://", 1)[1].split("/", 1)[0]
        hostport = hostport if ":" in hostport else f"{hostport}:10001"
    else:
        try:
            # As ray.init resolves it: "auto" finds this machine's cluster, and a loopback host
            # becomes this node's address.
            hostport = canonicalize_bootstrap_address(target)
        except ConnectionError:
            raise ConfigError(
                f"{source} {target}: no Ray cluster runs on this machine ({fix})"
            ) from None
        except ValueError:
            hostport = target
        if hostport is None:  # "local": ray.init starts one
            return
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"{source} {target}: not a Ray address (host:port, ray://host:port or auto)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
        return
    except TimeoutError:
        why = f"nothing answered in {PROBE_S:g} s"
    except OSError as err:
        why = err.strerror or str(err)
    raise ConfigError(f"{source} {target}: no Ray cluster answers there ({why}; {fix})")


def _fix(source: str) -> str:
    unset = "leave out --address" if source == "--address" else f"unset {source}"
    return f"start one with `ray start --head`, or {unset} for a local Ray"


@contextlib.contextmanager
def private_tmpdir() -> Iterator[None]:
    """The local Ray's processes get their own TMPDIR, removed after Ray shuts down at exit.

    Ray's dashboard processes (and any worker using ``multiprocessing``) leave ``pymp-*`` folders
    in the temp dir when Ray kills them at shutdown; this keeps them out of the system's. The
    driver's own temp dir (cached by ``tempfile``) and Ray's session folder (``RAY_TMPDIR``, else
    the system temp dir) stay where they were.
    """
    import ray

    system = tempfile.gettempdir()  # cached: the driver's own temp dir stays the system's
    scratch = tempfile.mkdtemp(prefix="raykd-ray-")
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "RAY_TMPDIR")}
    # Ray reads RAY_TMPDIR before TMPDIR for its session folder (logs, sockets): keep it there.
    os.environ.setdefault("RAY_TMPDIR", system)
    os.environ["TMPDIR"] = scratch
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def cleanup() -> None:
        try:
            ray.shutdown()
        except BaseException:  # noqa: BLE001 - a second Ctrl-C at exit: still remove the folder
            pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    atexit.register(cleanup)


RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")


def _quiet_workers() -> None:
    """Unless verbose: the workers' output to the log file, no Ray Data progress bars (their
    redraws, hundreds from the training feed alone, would fill it), no model-loading bars."""
    from ray.data import DataContext
    from transformers.utils import logging as hf_logging

    if console.verbose():
        return
    route_worker_output()
    hf_logging.disable_progress_bar()
    DataContext.get_current().enable_progress_bars = False


def route_worker_output() -> None:
    """Ray's driver prints every worker's stdout and stderr (progress-bar redraws included);
    these lines go to the log file instead (logger ``raykd.on_ray.session.workers``), and
    raykd's own (``console.WORKER_PREFIX``) to ``console.worker_line``. Call after
    ``ray.init``, which installs the printer this replaces: Ray has no public hook for it, so
    this goes through ``ray._private``. The raylet's warnings, which the driver prints through
    the same function, go there too."""
    import ray._private.worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    workers = logging.getLogger(f"{__name__}.workers")
    global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")
    global_worker_stdstream_dispatcher.remove_handler("raykd")

    def handle(data: dict) -> None:
        who = data.get("actor_name") or data.get("task_name") or "worker"
        for line in data.get("lines", []):
            workers.info("(%s pid=%s) %s", who, data.get("pid"), line)
            if line.startswith(console.WORKER_PREFIX):
                console.worker_line(line[len(console.WORKER_PREFIX) :])

    global_worker_stdstream_dispatcher.add_handler("raykd", handle)
    ray_worker.print_to_stdstream = lambda data, ignore_prefix=False: handle(data)


def _route_ray_logs() -> None:
    """Ray's own log lines (Ray Data's progress and its copy of a failed task's traceback) reach
    raykd's handlers through the root logger, where the console filter keeps them off the
    console unless verbose; Ray's own console handlers are muted. (Sharing raykd's file handler
    with Ray's loggers instead would let ``ray.init`` reformat it.)"""
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if type(handler) is not logging.FileHandler and isinstance(
                handler, logging.StreamHandler
            ):
                handler.setLevel(logging.CRITICAL)
        logger.propagate = True
