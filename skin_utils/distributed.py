"""Training on several processes with DistributedDataParallel (DDP), launched by ``torchrun``.

One machine, four GPUs (one process per GPU)::

    torchrun --nproc_per_node 4 -m skin_utils.train --data-dir data --epochs 10 --batch-size 32

Several machines: the same command on every machine, with torchrun's rendezvous flags (see
``torchrun --help`` and https://pytorch.org/docs/stable/elastic/run.html)::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 \\
             --rdzv_backend c10d --rdzv_endpoint HOST_OF_NODE_0:29500 -m skin_utils.train ...
    torchrun --nnodes 2 --node_rank 1 --nproc_per_node 4 \\
             --rdzv_backend c10d --rdzv_endpoint HOST_OF_NODE_0:29500 -m skin_utils.train ...

``--nnodes`` is the number of machines, ``--node_rank`` this machine's number (0 .. nnodes-1),
``--rdzv_endpoint`` a host:port of one of them that all can reach. On several machines the data
folder, the preprocessing cache and the run folder must be on a file system every machine sees
(the checkpoints are written by one process and read by all of them on ``--resume``).

How the work is shared (``python -m skin_utils.train`` without torchrun is one process and
behaves exactly like the training notebook):

* torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; `init_distributed` reads them and
  joins the process group: NCCL on CUDA (process ``LOCAL_RANK`` uses GPU ``LOCAL_RANK``), gloo
  on CPU.
* ``--batch-size`` is per process: the **global batch is batch_size x number of processes**
  (4 GPUs x 32 = 128 images per optimiser step). The learning rate is not scaled for you: when
  you raise the global batch, raise ``--lr`` yourself (linearly is the usual starting point).
* Training samples are sharded: `skin_utils.data.make_loader` replaces, inside a
  process group, the shuffling by a `torch.utils.data.DistributedSampler` and the
  class-balanced sampler by `DistributedWeightedSampler`. Both draw from a generator seeded
  with ``seed + epoch`` (``set_epoch``, called by `skin_utils.engine.fit`), so a resumed run
  sees the same images in the same epochs.
* `skin_utils.engine.fit` wraps the model in DDP (gradients averaged over all processes at
  every step), optionally converts BatchNorm to SyncBatchNorm (``sync_bn``: batch statistics
  over the global batch; CUDA only), and sums the training losses over all processes.
* Validation runs on rank 0 alone, on the whole validation set with the unwrapped model, and
  rank 0 sends the metrics to the others (`broadcast_object`), so every process takes the same
  best-checkpoint and early-stopping decisions. That is simpler than gathering predictions
  from every process, and exact; the price is that validation is not sped up by more GPUs.
* Rank 0 alone writes checkpoints, metrics and figures, and prints progress.
* `cleanup` destroys the process group at the end.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler, WeightedRandomSampler


def is_initialized() -> bool:
    """True inside a process group (a torchrun run with more than one process)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes training together (1 outside a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's number, 0 .. world_size - 1 (0 outside a process group)."""
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    """True for the process that writes files and prints (rank 0)."""
    return rank() == 0


def local_world_size() -> int:
    """Processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if is_initialized() else 1


@dataclass(frozen=True)
class Context:
    """Where this process stands: its ``rank`` among ``world_size`` processes, its
    ``local_rank`` on this machine, and the ``device`` it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Context:
    """Join the process group that torchrun describes in the environment (``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), or stay a single process
    when ``WORLD_SIZE`` is absent or 1.

    ``device`` (from `skin_utils.engine.resolve_device`) picks the backend: NCCL for CUDA,
    each process on GPU ``LOCAL_RANK`` (an index in ``device`` is ignored); gloo for CPU."""
    device = torch.device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Context(rank=0, local_rank=0, world_size=1, device=device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; "
                           "run a single process (python -m skin_utils.train) or install a full PyTorch.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"Process LOCAL_RANK={local_rank} needs GPU {local_rank}, but only {torch.cuda.device_count()} "
                "GPU(s) are visible: give torchrun --nproc_per_node at most the number of GPUs.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"device={str(device)!r}: distributed training runs on 'cuda' (NCCL) or 'cpu' (gloo).")
    if not is_initialized():
        dist.init_process_group(backend=backend)
    return Context(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(), device=device)


def cleanup(wait: bool = True) -> None:
    """Leave the process group (nothing outside one); with ``wait``, once every process has
    got here (``wait=False`` after an error, when the others may never arrive)."""
    if is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (nothing outside a process group)."""
    if is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_process_first():
    """Run the block on rank 0 first, then on the others: for work whose result is written to
    disk and reused (the synthetic demo data, the lesion split, the preprocessing cache), so
    that processes do not write the same files at the same time."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` as process ``src`` has it, on every process (any picklable object; returned
    unchanged outside a process group)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """The ``op`` ("sum", "min" or "max") of ``tensor`` over all processes, as a new tensor
    (a copy of ``tensor`` outside a process group). With NCCL the tensor must be on the GPU."""
    out = tensor.clone()
    if is_initialized():
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        if op not in ops:
            raise ValueError(f"op={op!r}: choose one of {sorted(ops)}.")
        dist.all_reduce(out, op=ops[op])
    return out


# ----------------------------------------------------------------------------- samplers
class DistributedWeightedSampler(Sampler[int]):
    """The distributed version of `torch.utils.data.WeightedRandomSampler`: each epoch draws
    ``num_samples`` indices (rounded up to a multiple of the number of processes, or down with
    ``drop_last``) with probability proportional to ``weights``, from a generator seeded with
    ``seed + epoch`` (`set_epoch`); process ``rank`` takes every ``num_replicas``-th of them,
    starting at its rank. The draws depend only on (seed, epoch, num_replicas), never on the
    history of the run, so a resumed run draws exactly what an uninterrupted one would."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if self.weights.ndim != 1 or len(self.weights) == 0 or not bool((self.weights >= 0).all()) \
                or float(self.weights.sum()) <= 0:
            raise ValueError("DistributedWeightedSampler: weights must be a non-empty 1-D sequence of "
                             "non-negative numbers, not all zero.")
        self.num_replicas = world_size() if num_replicas is None else int(num_replicas)
        self.rank = (dist.get_rank() if is_initialized() else 0) if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank={self.rank} must be in [0, {self.num_replicas}).")
        if not replacement and num_samples > len(self.weights):
            raise ValueError(f"num_samples={num_samples} > {len(self.weights)} weights: without replacement "
                             "there are not that many indices to draw.")
        self.replacement, self.seed, self.epoch = bool(replacement), int(seed), 0
        per_process = int(num_samples) / self.num_replicas
        self.num_samples = math.floor(per_process) if drop_last else math.ceil(per_process)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.replacement or self.total_size <= len(self.weights):
            drawn = torch.multinomial(self.weights, self.total_size, self.replacement, generator=g)
        else:  # without replacement and padded: repeat the first draws, like DistributedSampler
            drawn = torch.multinomial(self.weights, len(self.weights), False, generator=g)
            drawn = torch.cat([drawn, drawn[: self.total_size - len(drawn)]])
        return iter(drawn[self.rank:self.total_size:self.num_replicas].tolist())


def shard_sampler(dataset, sampler=None, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
    """The sampler a training loader should use in this process: inside a process group of
    more than one process, a shuffling loader gets a `DistributedSampler` and a
    `WeightedRandomSampler` becomes a `DistributedWeightedSampler` with the same weights;
    anything else (a single process, an in-order loader for validation or testing, another
    sampler) is returned as it is (None: the loader's own shuffling).

    ``drop_last`` (the loader's): the epoch's samples are cut to a multiple of the number of
    processes instead of padded with repeats, so that P processes with batch B make as many
    steps per epoch, on the same images, as one process with batch P x B."""
    if world_size() <= 1:
        return sampler
    if sampler is None and shuffle:
        return DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
    if isinstance(sampler, WeightedRandomSampler):
        return DistributedWeightedSampler(sampler.weights, sampler.num_samples, sampler.replacement, seed=seed,
                                          drop_last=drop_last)
    return sampler


# ----------------------------------------------------------------------------- the model
def wrap_model(model: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """``model`` (already on ``device``) wrapped in `DistributedDataParallel`; with ``sync_bn``
    its BatchNorm layers are first converted, in place, to SyncBatchNorm (CUDA only; the state
    dict keeps the same keys, so checkpoints load into a plain model). Outside a process group
    the model is returned as it is."""
    if not is_initialized() or world_size() <= 1:
        return model
    device = torch.device(device)
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn=True needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU. "
                             "Set sync_bn=False for gloo/CPU training.")
        if torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) is not model:
            raise TypeError("sync_bn: the model itself is a BatchNorm layer; wrap it in a module first.")
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
