"""Named models. Each backbone is defined once, as a Hydra model config under conf/model/<kind>/<family>-<size>.yaml,
and serves three doors alike: `create_model("<family>-<kind>-<size>")`, `timm.create_model("<family>_vit_<size>")`
(registered on `import hgrn`) and `python -m hgrn.train model=<kind>/<family>-<size>`.

The head of each kind is the model's, not the backbone's: a causal LM over the GPT-2 vocabulary (padded to 50272, as
the official LMs), or an image classifier on 224 x 224 ImageNet images in 14 x 14 patches (the official HGRN ViTs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

from omegaconf import OmegaConf
from timm.models import register_model
from torch import nn

from hgrn.config import CONFIG_DIR
from hgrn.models.backbone import as_backbone_config
from hgrn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from hgrn.models.lm import CausalLM, CausalLMConfig
from hgrn.models.vision import ImageClassifier, ImageClassifierConfig, timm_default_cfg

ModelConfig = CausalLMConfig | SequenceClassifierConfig | ImageClassifierConfig
_BUILDERS: dict[type, Callable[[Any], nn.Module]] = {
    CausalLMConfig: CausalLM,
    SequenceClassifierConfig: SequenceClassifier,
    ImageClassifierConfig: ImageClassifier,
}
HEADS: dict[str, Callable[..., ModelConfig]] = {
    "lm": lambda backbone: CausalLMConfig(backbone=backbone, vocab_size=50272),
    "vit": lambda backbone: ImageClassifierConfig(backbone=backbone, image_size=224, patch_size=14, num_classes=1000),
}


def _named_backbones() -> dict[str, tuple[str, str]]:
    """Registered name -> (head kind, model config path relative to conf/model)."""
    named = {}
    for kind in HEADS:
        for path in sorted((CONFIG_DIR / "model" / kind).glob("*.yaml")):
            family, size = path.stem.split("-", 1)
            named[f"{family}-{kind}-{size}"] = (kind, f"{kind}/{path.stem}")
    return named


NAMED_BACKBONES = _named_backbones()


def list_models() -> list[str]:
    return sorted(NAMED_BACKBONES)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The named config with overrides of its fields; `backbone={...}` updates backbone fields (and merges
    `mixer_options`). Unknown names or fields raise ValueError."""
    if name not in NAMED_BACKBONES:
        raise ValueError(f"model {name!r} is not registered; choose one of {list_models()}")
    kind, path = NAMED_BACKBONES[name]
    backbone = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / f"{path}.yaml"))
    config = HEADS[kind](as_backbone_config(backbone))
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


def _register_with_timm(name: str) -> None:
    """timm finds a model by its entry function's name (`hgrn2_vit_tiny` for `hgrn2-vit-tiny`)."""

    def entry(pretrained: bool = False, **kwargs: Any) -> ImageClassifier:
        return _timm_vit(name, pretrained, kwargs)

    entry.__name__ = entry.__qualname__ = name.replace("-", "_")
    entry.__doc__ = f"{name} (conf/model/{NAMED_BACKBONES[name][1]}.yaml)"
    register_model(entry)


for _name, (_kind, _) in NAMED_BACKBONES.items():
    if _kind == "vit":
        _register_with_timm(_name)
