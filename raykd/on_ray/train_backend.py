"""The torch.distributed set-up of Ray Train's workers, loopback-only on a local Ray.

Ray Train's default rendezvous (``env://``) starts a TCPStore on the rank-0 worker that listens
on every interface (``::``), whatever ``MASTER_ADDR`` says; torch offers no bind address for it.
On a local Ray every worker is on this machine, so there is no need for a TCP rendezvous at all:
``LoopbackTorchConfig`` rendezvous through a ``FileStore`` (``file://``, a fresh file in the
temp dir) and pins gloo's and NCCL's own sockets to the loopback interface. On a cluster the
workers must reach each other, and Ray Train's default stays (see README, "On a cluster").
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import (
    _set_torch_distributed_env_vars,
    _setup_torch_process_group,
    _TorchBackend,
)

LOOPBACK_IFNAME = "lo"


def _pin_to_loopback(store: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_IFNAME
    os.environ["NCCL_SOCKET_IFNAME"] = LOOPBACK_IFNAME
    # Read by DeepSpeed's launcher checks only; nothing listens on them.
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = "0"
    os.environ["RAYKD_PG_STORE"] = store


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: LoopbackTorchConfig) -> None:
        # A restarted worker group (a lost worker) gets a fresh store; the last one's workers
        # were killed, so nothing removes its file but this.
        self._remove_store()
        store = os.path.join(tempfile.gettempdir(), f"raykd-pg-{uuid.uuid4().hex}")
        self._store = store
        worker_group.execute(_pin_to_loopback, store=store)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get(
            [
                worker_group.execute_single_async(
                    i,
                    _setup_torch_process_group,
                    backend=backend_config.backend or "gloo",
                    world_rank=i,
                    world_size=len(worker_group),
                    init_method=f"file://{store}",
                    timeout_s=backend_config.timeout_s,
                )
                for i in range(len(worker_group))
            ]
        )

    def on_shutdown(self, worker_group, backend_config) -> None:
        super().on_shutdown(worker_group, backend_config)
        self._remove_store()

    def _remove_store(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None and os.path.exists(store):
            os.remove(store)
        self._store = None


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """TorchConfig for workers that all run on this machine: no TCP rendezvous."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend


def single_machine() -> bool:
    """Whether every node of the Ray cluster is this machine (a local Ray)."""
    here = ray.util.get_node_ip_address()
    return all(n["NodeManagerAddress"] == here for n in ray.nodes() if n["Alive"])


def torch_config(backend: str) -> TorchConfig:
    """The process-group config: loopback-only when every node is this machine, Ray Train's
    default (a TCP rendezvous the other nodes can reach) on a cluster."""
    return (
        LoopbackTorchConfig(backend=backend) if single_machine() else TorchConfig(backend=backend)
    )
