"""Image classifier: linear patch embedding, no class token, 2-D (or bidirectional) backbone, mean pooling."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from einops import rearrange
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from hgrn.layers.directions import GRID_DIRECTIONS
from hgrn.models.backbone import Backbone, BackboneConfig, as_backbone_config, init_weights


@dataclass
class ImageClassifierConfig:
    backbone: BackboneConfig | dict[str, Any]
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    drop_rate: float = 0.0  # dropout before the classifier
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} must divide image_size={self.image_size}")
        backbone = as_backbone_config(self.backbone)
        side = self.image_size // self.patch_size
        self.backbone = replace(backbone, grid=(side, side)) if backbone.direction in GRID_DIRECTIONS else backbone


class ImageClassifier(nn.Module):
    def __init__(self, config: ImageClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        d = config.backbone.d_model
        self.num_features = d
        self.patch_embed = nn.Conv2d(config.in_chans, d, config.patch_size, stride=config.patch_size)
        self.backbone = Backbone(config.backbone)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(d, config.num_classes) if config.num_classes > 0 else nn.Identity()
        self.apply(lambda m: init_weights(m, config.init_std))

    def forward_features(self, images: Tensor) -> Tensor:
        """images [B, C, H, W] -> patch features [B, (H/p)(W/p), d], rows first."""
        return self.backbone(rearrange(self.patch_embed(images), "b d h w -> b (h w) d"))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.head_drop(features.mean(1))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def timm_default_cfg(config: ImageClassifierConfig) -> dict[str, Any]:
    """The evaluation preprocessing timm and its data pipeline read from `model.pretrained_cfg`."""
    return {
        "num_classes": config.num_classes,
        "input_size": (config.in_chans, config.image_size, config.image_size),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed",
        "classifier": "head",
    }
