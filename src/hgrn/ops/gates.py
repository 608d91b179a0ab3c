"""Gate parameterisations shared by the reference ops, the kernels and the layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def lower_bounded_gate(f_logits: Tensor, lower_bound: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return (log f, k = 1 - f) for the lower-bounded forget gate f = lb + (1 - lb) * sigmoid(f_logits) of HGRN1
    and HGRN2 (k is HGRN2's tied key, HGRN1's input weight). Any shape; lower_bound broadcasts against f_logits.

    Both are computed without cancellation: k = (1 - lb) * sigmoid(-z) is exact even when f is within 1e-7 of 1,
    and log f switches between log1p(-k) (f near 1) and log(f) (f small) so neither loses precision. The unused
    branch of each `where` sees a harmless value, so gradients stay finite everywhere.
    """
    if lower_bound is None:
        return F.logsigmoid(f_logits), torch.sigmoid(-f_logits)
    lower_bound = lower_bound.to(f_logits.dtype)
    k = (1 - lower_bound) * torch.sigmoid(-f_logits)
    f = lower_bound + (1 - lower_bound) * torch.sigmoid(f_logits)
    near_one = k < 0.5
    log_f = torch.where(
        near_one,
        torch.log1p(-torch.where(near_one, k, torch.zeros_like(k))),
        torch.log(torch.where(near_one, torch.ones_like(f), f)),
    )
    return log_f, k
