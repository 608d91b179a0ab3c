"""Normalisations by name, for token features [B, T, D]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("layernorm", "rmsnorm", "simple_rmsnorm", "batchnorm", "none")


class SequenceBatchNorm(nn.Module):
    """BatchNorm over batch and time for [B, T, D] features (LRA's 'batch' and 'synbatch' norms).

    The statistics live in an inner nn.BatchNorm1d applied to the [B * T, D] view: the same per-channel statistics
    as BatchNorm1d over [B, D, T], without the two transposed copies (on an H200, [128, 2000, 64] bf16 forward and
    backward: 0.245 ms against 1.003 ms through [B, D, T]; results/bench/NOTES.md). Lightning's `sync_batchnorm`
    (trainer=ddp) swaps that inner module for a SyncBatchNorm, which then pools the statistics of every process
    ('synbatch'), while this module keeps the [B, T, D] layout around it.

    group_size: in training, statistics over groups of this many sequences instead of the whole batch, as the
    official runs with unsynchronised batch norm on several GPUs computed them (one group per GPU). The running
    statistics follow the first group, as DDP broadcasts the first process's buffers to the others.
    """

    def __init__(self, dim: int, group_size: int | None = None) -> None:
        super().__init__()
        if group_size is not None and group_size < 1:
            raise ValueError(f"batchnorm group_size={group_size} must be a positive number of sequences, or None")
        self.norm = nn.BatchNorm1d(dim)
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # [B * T, D]: each sequence's T rows together
        if self.training and self.group_size is not None and x.shape[0] > self.group_size:
            first, *rest = flat.split(self.group_size * x.shape[1])
            y = torch.cat([self.norm(first), *(self._group_statistics_only(group) for group in rest)])
        else:
            y = self.norm(flat)
        return y.view(x.shape)

    def _group_statistics_only(self, group: Tensor) -> Tensor:
        """Normalise with the group's own statistics and the shared affine, leaving the running statistics alone."""
        norm = self.norm
        return F.batch_norm(group, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)


def make_norm(kind: str, dim: int, eps: float = 1e-6, batchnorm_group: int | None = None) -> nn.Module:
    """'layernorm', 'rmsnorm' (learned scale), 'simple_rmsnorm' (no weight), 'batchnorm' (statistics over groups
    of batchnorm_group sequences when given) or 'none'."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "simple_rmsnorm":
        return nn.RMSNorm(dim, eps=eps, elementwise_affine=False)
    if kind == "batchnorm":
        return SequenceBatchNorm(dim, batchnorm_group)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r} is not a known normalisation; choose one of {NORMS}")
