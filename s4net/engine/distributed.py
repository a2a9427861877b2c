"""Several processes, one run: torchrun's ranks, their share of each global batch, losses averaged as one process's.

``torchrun --nproc-per-node N --no-python s4net train ...`` starts N copies of a trainer with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`join_world` reads them
and joins the process group (NCCL on CUDA, gloo on CPU). Without them a trainer is a world of one.

Two rules keep a run on N processes the run on one:

* the sampler draws *global* batches (a function of seed and iteration alone) and each rank takes
  its contiguous share (:class:`RankShare`), so every world size sees the same images in the same
  order;
* a loss that is a mean over the batch is written as ``global_mean(total, count)``: each rank's sum
  over its share divided by the count summed over all ranks, scaled so that DistributedDataParallel's
  average of the ranks' gradients is the gradient of the one-process mean.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from s4net.errors import InputError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "S4NET_DIST_TIMEOUT"  # seconds a collective may wait for a missing rank before failing


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files, logs metrics and draws the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a global batch; an error naming both numbers when it does not divide."""
        if batch_size % self.size:
            raise InputError(None, f"the batch size {batch_size} does not divide over {self.size} processes; use a "
                                   f"multiple of {self.size} (the global batch is split, not multiplied)")
        return batch_size // self.size


def world_from_env() -> World:
    """The :class:`World` torchrun describes in the environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def join_world(device: torch.device) -> World:
    """Join torchrun's process group (NCCL for CUDA devices, gloo otherwise); returns this process's :class:`World`.

    A world of one joins nothing. A collective waits at most ``$S4NET_DIST_TIMEOUT`` seconds (default
    600) for a rank that stopped answering, then fails instead of hanging.
    """
    world = world_from_env()
    if not world.distributed:
        return world
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), world.local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timeout)
    log.info("rank %d of %d joined the %s process group", world.rank, world.size, backend)
    return world


def leave_world(world: World) -> None:
    """Leave the process group :func:`join_world` joined (nothing for a world of one)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(name: str, world: World) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun, anything else is kept."""
    if world.distributed and name in ("cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return name


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_mean(total: torch.Tensor, count: torch.Tensor | float, floor: float = 1e-6) -> torch.Tensor:
    """``total / count`` over the global batch, from this rank's ``total`` and ``count`` (sums over its share).

    One process: ``total / max(count, floor)``. Several: the count is summed over the ranks and the result
    multiplied by the world size, so that DistributedDataParallel's mean of the ranks' gradients equals the
    gradient of the one-process mean. Every rank must call it the same number of times, whatever its data.
    """
    count = torch.as_tensor(count, dtype=torch.float32, device=total.device).detach()
    if not active():
        return total / count.clamp_min(floor)
    return total * dist.get_world_size() / all_ranks_sum(count).clamp_min(floor)


def all_ranks_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over the ranks (``values`` itself for one process)."""
    if not active():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def broadcast_object(value: object, world: World) -> object:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Wait until every rank reaches this point."""
    if world.distributed:
        dist.barrier()


class RankShare(torch.utils.data.Sampler):
    """Each global batch of ``batches`` cut to this rank's contiguous share (rank r: items ``r*b .. (r+1)*b - 1``)."""

    def __init__(self, batches: torch.utils.data.Sampler, world: World, batch_size: int) -> None:
        self.batches, self.world = batches, world
        self.local = world.local_batch(batch_size)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Sequence]:
        start = self.world.rank * self.local
        for batch in self.batches:
            yield batch[start:start + self.local]
