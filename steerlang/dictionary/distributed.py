"""Data parallelism for harvesting and SAE training, on `torch.distributed` (no other dependency).

A command launched by ``torchrun --nproc-per-node N`` (or ``accelerate launch``) finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment; `init`
starts the process group from them: backend ``gloo`` on CPU, ``cpu:gloo,cuda:nccl`` when CUDA is
available (the trainer's tensors live on the CPU; a harvest's model goes on ``cuda:LOCAL_RANK``).
Without those variables (or with ``WORLD_SIZE=1``) nothing is started and every function here
answers as for one process, so a plain run behaves exactly as before.

What runs where:

- harvest (`steerlang.dictionary.harvest`): rank r takes the batches ``j`` with ``j % N == r`` (rows
  ``[j*batch, (j+1)*batch)`` of the dataset), harvests them into its own folder, and rank 0 merges
  the N folders in sample order into the shards a one-process harvest writes;
- training (`steerlang.dictionary.train`): every rank reads the same global batch and trains on its
  slice; gradients are summed over ranks (the loss of each slice is normalised by the global batch's
  statistics, so the sum is the one-process gradient), the dead-latent counts use the global firing
  mask, and only rank 0 writes checkpoints and the dictionary.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["active", "barrier", "device", "init", "is_main", "rank", "world_size"]


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init(timeout_s: float = 1800.0) -> bool:
    """Start the process group from the launcher's environment when there is more than one process
    (idempotent). Returns whether this is a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if _env_world() <= 1 or not dist.is_available():
        return False
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_world_size() > 1


def active() -> bool:
    """A process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or not distributed: the process that writes results and draws progress."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def device() -> str:
    """Where this process puts a model: ``cuda:LOCAL_RANK`` in a distributed run on GPUs, else cpu."""
    if active() and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"
