"""Starting or joining Ray: the only place the driver calls ``ray.init``."""

from __future__ import annotations

import logging
import os
import sys

from raykd.config import RaySection

log = logging.getLogger(__name__)

# With clusters disabled, Ray keeps the node address (and so every listening port) on loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ensure_ray(cfg: RaySection, address: str | None = None) -> None:
    """Join ``address`` / ``cfg.address`` / ``RAY_ADDRESS``, or start a loopback-only local Ray."""
    target = address or cfg.address or os.environ.get("RAY_ADDRESS")
    if not target:
        if "ray" in sys.modules and os.environ.get(LOOPBACK_ENV) != "0":
            log.warning("ray was imported before raykd could keep it on loopback")
        os.environ.setdefault(LOOPBACK_ENV, "0")
    import ray

    if ray.is_initialized():
        return
    if target:
        ray.init(address=target)
        log.info("joined Ray cluster at %s", target)
        return
    # The dashboard serves the State API, which Ray Train's placement-group cleaner needs: without
    # it, a Tune trial stopped inside fit() keeps its workers' reservation. It binds to loopback.
    ray.init(
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        logging_level=logging.WARNING,
    )
    log.info("started a local Ray on loopback with %s", ray.cluster_resources())
