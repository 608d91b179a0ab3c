"""Named model sizes, in one place. `create_model(name, **overrides)` builds any of them; the image models are also
timm models (`timm.create_model("hgrn2_vit_tiny")` once `hgrn.models` is imported)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields, replace
from functools import partial
from typing import Any

from timm.models import register_model
from torch import nn

from hgrn.models.backbone import BackboneConfig, as_backbone_config
from hgrn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from hgrn.models.lm import CausalLM, CausalLMConfig
from hgrn.models.vision import ImageClassifier, ImageClassifierConfig, timm_default_cfg

ModelConfig = CausalLMConfig | SequenceClassifierConfig | ImageClassifierConfig
_BUILDERS: dict[type, Callable[[Any], nn.Module]] = {
    CausalLMConfig: CausalLM,
    SequenceClassifierConfig: SequenceClassifier,
    ImageClassifierConfig: ImageClassifier,
}

# WikiText-103 scale, the HGRN1 fairseq `hgrn_lm_base`: d 512, 6 layers, bilinear GLU of width 1024, dropout 0.1.
_LM_BASE = {"d_model": 512, "n_layers": 6, "glu_ratio": 2.0, "glu_act": "none", "norm": "layernorm", "dropout": 0.1}
_LM_MIXERS = {
    "hgrn1": {},  # complex, LayerNorm, bias: the official Hgru1d
    "hgrn2": {"expand_ratio": 128, "norm": "simple_rmsnorm"},  # the official LM Hgru2 (128 = the LLM head size)
    "gla": {"num_heads": 4},
    "transformer": {"num_heads": 8},
}
# ImageNet, the official HGRN ViTs: depth 12, patch 14 (16 x 16 tokens), LayerNorm blocks, GLU(SiLU, 2d). HGRN1
# scans the patch sequence both ways (BiHgru1d); HGRN2 uses the 2-D scan with expand_ratio 8 (the official
# ImageNet value is not in the released scripts).
_VIT_WIDTHS = {"tiny": 192, "small": 384}
_VIT_MIXERS = {"hgrn1": ("bidirectional", {}), "hgrn2": ("2d", {"expand_ratio": 8})}


def _lm(family: str) -> CausalLMConfig:
    mixer = "attention" if family == "transformer" else family
    backbone = BackboneConfig(mixer=mixer, mixer_options=_LM_MIXERS[family], **_LM_BASE)
    return CausalLMConfig(backbone=backbone, vocab_size=50272)


def _vit(family: str, size: str) -> ImageClassifierConfig:
    direction, options = _VIT_MIXERS[family]
    backbone = BackboneConfig(
        d_model=_VIT_WIDTHS[size],
        n_layers=12,
        mixer=family,
        mixer_options=options,
        direction=direction,
        norm="layernorm",
        glu_ratio=2.0,
        glu_act="silu",
    )
    return ImageClassifierConfig(backbone=backbone, image_size=224, patch_size=14, num_classes=1000)


NAMED_CONFIGS: dict[str, Callable[[], ModelConfig]] = {
    **{f"{family}-lm-base": partial(_lm, family) for family in _LM_MIXERS},
    **{f"{family}-vit-{size}": partial(_vit, family, size) for family in _VIT_MIXERS for size in _VIT_WIDTHS},
}


def list_models() -> list[str]:
    return sorted(NAMED_CONFIGS)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The named config with overrides of its fields; `backbone={...}` updates backbone fields (and merges
    `mixer_options`). Unknown names or fields raise ValueError."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"model {name!r} is not registered; choose one of {list_models()}")
    config = NAMED_CONFIGS[name]()
    allowed = [f.name for f in fields(config)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown overrides {unknown} for model {name!r}; allowed: {allowed}")
    if "backbone" in overrides:
        backbone = asdict(config.backbone)
        update = dict(overrides.pop("backbone"))
        backbone["mixer_options"] = {**backbone["mixer_options"], **update.pop("mixer_options", {})}
        overrides["backbone"] = as_backbone_config({**backbone, **update})
    return replace(config, **overrides)


def build_model(config: ModelConfig) -> nn.Module:
    return _BUILDERS[type(config)](config)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model, e.g. create_model("hgrn2-lm-base", backbone={"n_layers": 2})."""
    return build_model(model_config(name, **overrides))


_TIMM_ARGS = {"num_classes": "num_classes", "in_chans": "in_chans", "img_size": "image_size", "drop_rate": "drop_rate"}


def _timm_vit(name: str, pretrained: bool, kwargs: dict[str, Any]) -> ImageClassifier:
    """timm entry point: maps timm's keyword arguments onto the named config."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if pretrained:
        raise ValueError(f"no pretrained weights are published for {name}; use pretrained=False")
    drop_path = kwargs.pop("drop_path_rate", 0.0)
    unknown = sorted(set(kwargs) - set(_TIMM_ARGS))
    if unknown:
        raise ValueError(f"unknown arguments {unknown} for {name}; allowed: {[*_TIMM_ARGS, 'drop_path_rate']}")
    overrides = {_TIMM_ARGS[key]: value for key, value in kwargs.items()}
    model = create_model(name, backbone={"drop_path": drop_path}, **overrides)
    model.pretrained_cfg = model.default_cfg = timm_default_cfg(model.config)
    return model


@register_model
def hgrn1_vit_tiny(pretrained: bool = False, **kwargs: Any) -> ImageClassifier:
    return _timm_vit("hgrn1-vit-tiny", pretrained, kwargs)


@register_model
def hgrn1_vit_small(pretrained: bool = False, **kwargs: Any) -> ImageClassifier:
    return _timm_vit("hgrn1-vit-small", pretrained, kwargs)


@register_model
def hgrn2_vit_tiny(pretrained: bool = False, **kwargs: Any) -> ImageClassifier:
    return _timm_vit("hgrn2-vit-tiny", pretrained, kwargs)


@register_model
def hgrn2_vit_small(pretrained: bool = False, **kwargs: Any) -> ImageClassifier:
    return _timm_vit("hgrn2-vit-small", pretrained, kwargs)
