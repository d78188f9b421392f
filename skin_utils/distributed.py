"""Training on several processes with DistributedDataParallel, launched by ``torchrun``::

    torchrun --nproc_per_node 4 -m skin_utils.train --data-dir data --epochs 10 --batch-size 32
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --rdzv_backend c10d \\
             --rdzv_endpoint HOST_OF_NODE_0:29500 -m skin_utils.train ...   # the same on each machine

Several machines need the data, the cache and the run folder on a shared file system.
``--batch-size`` is per process (the learning rate is not scaled for you). Samples are sharded and
drawn from ``seed + epoch`` (a resumed run sees the same images). Rank 0 alone validates (exact and
simple), broadcasts the metrics so that every process decides alike, writes and prints.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, WeightedRandomSampler


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    """True for the process that writes files and prints (rank 0)."""
    return rank() == 0


def init_distributed(device) -> torch.device:
    """Join the process group torchrun describes, or stay one process; returns this process's device
    (NCCL on GPU ``LOCAL_RANK``, gloo on the CPU)."""
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"Process LOCAL_RANK={local_rank} needs GPU {local_rank}, but only "
                               f"{torch.cuda.device_count()} GPU(s) are visible: give torchrun --nproc_per_node "
                               "at most the number of GPUs.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"device={str(device)!r}: distributed training runs on 'cuda' (NCCL) or 'cpu' (gloo).")
    if not is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group without waiting: `train.train` ends at a barrier, and after an error the others
    may never arrive."""
    if is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first, then the others: files made once (demo data, split, cache, weights)
    are never written by two processes at the same time."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` (anything picklable) on every process."""
    box = [obj]
    if is_initialized():
        dist.broadcast_object_list(box, src=0)
    return box[0]


class DistributedWeightedSampler(DistributedSampler):
    """`WeightedRandomSampler` (with replacement) shared among processes: each epoch draws from
    ``seed + epoch`` and process ``rank`` takes every ``num_replicas``-th index, so a resumed run draws
    what an uninterrupted one would (lengths, ``set_epoch`` and ``drop_last`` as `DistributedSampler`'s)."""

    def __init__(self, weights, num_samples: int, seed: int, num_replicas: int, rank: int, drop_last: bool = False):
        super().__init__(range(num_samples), num_replicas, rank, shuffle=False, seed=seed, drop_last=drop_last)
        self.weights = torch.as_tensor(weights, dtype=torch.double)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, True, generator=g)
        return iter(drawn[self.rank::self.num_replicas].tolist())


def shard_sampler(dataset, sampler=None, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
    """This process's sampler: in a process group, shuffling becomes a `DistributedSampler` and a
    `WeightedRandomSampler` a `DistributedWeightedSampler` (``drop_last``: P processes of batch B take
    the steps of one process of batch P x B); anything else is returned as it is."""
    if world_size() <= 1:
        return sampler
    if sampler is None and shuffle:
        return DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last)
    if isinstance(sampler, WeightedRandomSampler):
        if not sampler.replacement:
            raise ValueError("A WeightedRandomSampler without replacement cannot be sharded among processes.")
        return DistributedWeightedSampler(sampler.weights, sampler.num_samples, seed, world_size(), rank(), drop_last)
    return sampler


def wrap_model(model: torch.nn.Module, device, sync_bn: bool = False) -> torch.nn.Module:
    """``model`` in `DistributedDataParallel` in a process group, else as it is; ``sync_bn`` converts its
    BatchNorm layers in place (CUDA only; the state dict keeps its keys)."""
    if world_size() <= 1:
        return model
    device = torch.device(device)
    if sync_bn and device.type != "cuda":
        raise ValueError("sync_bn=True needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU. "
                         "Set sync_bn=False for gloo/CPU training.")
    if sync_bn:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
