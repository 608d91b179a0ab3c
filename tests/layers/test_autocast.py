"""cast_once: a layer input read by several projections is cast to the autocast dtype once, not per projection."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from hgrn.layers import GLU, GLAMixer, HGRN1Mixer
from hgrn.layers.autocast import cast_once


def test_cast_once_follows_autocast():
    x = torch.randn(3, 4)
    assert cast_once(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cast_once(x).dtype == torch.bfloat16
        assert cast_once(x.bfloat16()).dtype == torch.bfloat16
        ids = torch.arange(3)
        assert cast_once(ids) is ids


def _saved_bytes_and_output(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct storages autograd saves for the backward, and the output, under CPU bf16 autocast.
    Each storage is held until the count is done: one saved by a graph node that is dropped on the way (inside an
    op) could otherwise be freed and its address taken by a later one, which would then not be counted."""
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x * 1.0)  # not a leaf: autocast caches only the casts of leaves (parameters)
    return sum(storage.nbytes() for storage in storages.values()), y


@pytest.mark.parametrize(
    ("make", "extra_copies"),
    [(lambda: GLU(32, 64), 1), (lambda: HGRN1Mixer(32), 2), (lambda: GLAMixer(32, num_heads=2), 4)],
    ids=["glu", "hgrn1", "gla"],
)
def test_projections_share_one_saved_copy(make, extra_copies, monkeypatch):
    """The same output bit for bit, and one bf16 copy of the input saved instead of one per projection."""
    torch.manual_seed(0)
    module, x = make(), torch.randn(2, 16, 32, requires_grad=True)
    saved, y = _saved_bytes_and_output(module, x)
    monkeypatch.setattr(sys.modules[type(module).__module__], "cast_once", lambda t: t)  # autocast's own casts
    saved_per_projection, y_per_projection = _saved_bytes_and_output(module, x)
    assert torch.equal(y, y_per_projection)
    assert saved_per_projection - saved == extra_copies * x.numel() * 2
