"""Sequence classifier (LRA, MQAR-style probes): embed, add positions, backbone, pool over real tokens, linear head.

Two-document tasks (LRA Retrieval) encode both documents with the same backbone and classify
[a, b, a - b, a * b] through an MLP, the standard two-tower setup.

The official LRA runs differ from the defaults here in three knobs, which their recipes set: the fixed sinusoidal
position encoding with its dropout (position_encoding), PyTorch's default initialisation (init_std=None) and scans
that run over the padding too (mask_padding=False; pooling still averages the real tokens only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hgrn.layers.positions import POSITION_ENCODINGS, build_positions
from hgrn.models.backbone import Backbone, BackboneConfig, as_backbone_config, init_weights

POOLINGS = ("mean", "first", "last")


@dataclass
class SequenceClassifierConfig:
    backbone: BackboneConfig | dict[str, Any]
    num_classes: int
    vocab_size: int | None = None  # token-id inputs [B, T] ...
    input_dim: int | None = None  # ... or continuous inputs [B, T, input_dim] (e.g. pixel intensities)
    max_length: int | None = None  # position information for this many positions (LRA's 'position' encoder)
    position_encoding: str = "learned"  # sinusoidal (fixed, then Dropout(position_dropout)) | learned
    position_dropout: float = 0.1
    pooling: str = "mean"
    pair: bool = False  # two documents per example (LRA Retrieval)
    init_std: float | None = 0.02  # N(0, init_std) weights and zero biases; None keeps PyTorch's defaults
    mask_padding: bool = True  # False: the scans run over the padding as over any token (the official LRA code)

    def __post_init__(self) -> None:
        self.backbone = as_backbone_config(self.backbone)
        if (self.vocab_size is None) == (self.input_dim is None):
            raise ValueError(
                f"give exactly one of vocab_size (token inputs) and input_dim (continuous inputs); "
                f"got vocab_size={self.vocab_size}, input_dim={self.input_dim}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not known; choose one of {POOLINGS}")
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding={self.position_encoding!r} is not known; choose one of {POSITION_ENCODINGS}"
            )
        if self.init_std is None and self.backbone.scaled_out_proj_init:
            raise ValueError("backbone.scaled_out_proj_init rescales init_std: set init_std, or turn it off")


class SequenceClassifier(nn.Module):
    def __init__(self, config: SequenceClassifierConfig) -> None:
        super().__init__()
        self.config = config
        d = config.backbone.d_model
        if config.vocab_size is not None:
            self.encoder = nn.Embedding(config.vocab_size, d)
        else:
            self.encoder = nn.Linear(config.input_dim, d)
        self.position = None
        if config.max_length:
            self.position = build_positions(config.position_encoding, d, config.max_length, config.position_dropout)
        self.backbone = Backbone(config.backbone)
        if config.pair:
            self.head = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Linear(d, config.num_classes))
        else:
            self.head = nn.Linear(d, config.num_classes)
        if config.init_std is not None:
            self.apply(lambda m: init_weights(m, config.init_std))

    def forward(
        self,
        inputs: Tensor,
        mask: Tensor | None = None,
        inputs2: Tensor | None = None,
        mask2: Tensor | None = None,
    ) -> Tensor:
        """inputs [B, T] ids or [B, T, C] values; mask [B, T] True on real tokens -> logits [B, classes]."""
        features = self.encode(inputs, mask)
        if self.config.pair:
            if inputs2 is None:
                raise ValueError("this classifier has pair=True: pass the second document as inputs2 (and mask2)")
            other = self.encode(inputs2, mask2)
            features = torch.cat((features, other, features - other, features * other), -1)
        return self.head(features)

    def encode(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        """One pooled feature vector per sequence, [B, d]."""
        x = self.encoder(inputs)
        if self.position is not None:
            x = self.position(x)
        features = self.backbone(x, mask if self.config.mask_padding else None)
        return pool(features, mask, self.config.pooling)


def pool(x: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """Pool [B, T, d] over the real tokens of each sequence."""
    if how == "first":
        return x[:, 0]
    if mask is None:
        return x.mean(1) if how == "mean" else x[:, -1]
    if how == "mean":
        weights = mask.to(x.dtype)[..., None]
        return (x * weights).sum(1) / weights.sum(1).clamp_min(1)
    last = mask.long().sum(1).clamp_min(1) - 1
    return x[torch.arange(x.shape[0], device=x.device), last]
