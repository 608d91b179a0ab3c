"""One cast of a layer's input for all of its projections under autocast.

Autocast casts an fp32 activation to the autocast dtype separately for every matmul that reads it, and each Linear
saves its own cast copy for the backward. A layer whose input feeds several projections (HGRN1's input, forget and
output-gate projections; GLA's five; the GLU's gate and up projections) casts it once instead: the same values, one
saved copy and one cast kernel instead of several.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cast_once(x: Tensor) -> Tensor:
    """x in the autocast dtype of its device when autocast is on there and x is a float of another dtype, else x."""
    device = x.device.type
    if not torch.is_autocast_enabled(device) or not x.is_floating_point():
        return x
    return x.to(torch.get_autocast_dtype(device))
