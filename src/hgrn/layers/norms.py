"""Normalisations by name, for token features [B, T, D]."""

from __future__ import annotations

from torch import Tensor, nn

NORMS = ("layernorm", "rmsnorm", "simple_rmsnorm", "batchnorm", "none")


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm over batch and time for [B, T, D] features (LRA's 'batch'/'synbatch'; Lightning syncs it on DDP)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, dim: int, eps: float = 1e-6) -> nn.Module:
    """'layernorm', 'rmsnorm' (learned scale), 'simple_rmsnorm' (no weight), 'batchnorm' or 'none'."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "simple_rmsnorm":
        return nn.RMSNorm(dim, eps=eps, elementwise_affine=False)
    if kind == "batchnorm":
        return SequenceBatchNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r} is not a known normalisation; choose one of {NORMS}")
