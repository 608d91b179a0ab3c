"""Validate a composed training config before anything is built or loaded.

An unknown key or a value of the wrong type fails here, with the full key named: the model node is checked
against `BackboneConfig` (OmegaConf structured config), every `_target_` node against its target's signature.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hgrn.config import ConfigError
from hgrn.layers.directions import GRID_DIRECTIONS
from hgrn.models import BackboneConfig
from hgrn.models.backbone import Block
from hgrn.training.image_classification import TimmModelConfig, is_timm_model

TOP_LEVEL = {
    "name",
    "model",
    "data",
    "task",
    "trainer",
    "callbacks",
    "logger",
    "optim",
    "sched",
    "paths",
    "seed",
    "ckpt_path",
    "resume",
}
TARGET_NODES = ("data", "task", "trainer", "optim", "sched")
SET_BY_TRAIN = {"task": {"backbone", "data", "optim", "sched"}, "trainer": {"logger", "callbacks", "default_root_dir"}}


def check_config(cfg: DictConfig) -> None:
    """Every check below, or a ConfigError naming the full key; nothing is built or loaded."""
    try:
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves (${div:...}, ${task.monitor}, ...)
    except OmegaConfBaseException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise ConfigError(f"{error.full_key}: {str(error).splitlines()[0]}") from None
    unknown = sorted(set(cfg) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown top-level config keys {unknown}; allowed: {sorted(TOP_LEVEL)}")
    check_model(cfg.model)
    for key in TARGET_NODES:
        if cfg.get(key) is not None:
            check_target_node(cfg[key], key, SET_BY_TRAIN.get(key, set()))
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            if node is not None:
                check_target_node(node, f"{group}.{name}")
    check_values(cfg)


def _whole(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# Values no run can start with, whatever the target's type hints say: (key, test, what the value must be).
VALUE_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("seed", _whole(0), "a whole number >= 0"),
    ("optim.lr", lambda v: _number(v) and v > 0, "a number > 0"),
    ("optim.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0"),
    ("sched.warmup_steps", _whole(0), "a whole number >= 0"),
    ("data.batch_size", _whole(1), "a whole number >= 1"),
    ("data.num_workers", _whole(0), "a whole number >= 0"),
    ("trainer.max_epochs", lambda v: v is None or _whole(-1)(v), "a whole number >= -1 (-1: no limit)"),
    ("trainer.accumulate_grad_batches", _whole(1), "a whole number >= 1"),
    ("model.dropout", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
)


def check_values(cfg: DictConfig) -> None:
    """The VALUE_RULES, and a resume checkpoint that exists."""
    for key, valid, meaning in VALUE_RULES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not valid(value):
            raise ConfigError(f"{key}={value!r} must be {meaning}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and not (isinstance(ckpt_path, str) and Path(ckpt_path).is_file()):
        raise ConfigError(f"ckpt_path={ckpt_path} is not a file; give a run's checkpoints/last.ckpt (or best.ckpt)")


def check_hardware(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one: say which trainer to use instead (Lightning's own message does not)."""
    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and this machine has none; run on the CPU with "
            "trainer=cpu (the recipe's batch and schedule stay the same)"
        )


def check_model(node: DictConfig) -> None:
    """Types and keys through the BackboneConfig schema, then one block built on the meta device (no memory) so the
    mixer's own checks (expand_ratio divides d_model, heads divide the width, ...) run now. A node that names a timm
    model (the image task's DeiT baselines) is checked against TimmModelConfig instead."""
    if is_timm_model(node):
        try:
            OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TimmModelConfig), node))
        except OmegaConfBaseException as error:
            if isinstance(error.__cause__, ValueError):
                raise ConfigError(f"model: {error.__cause__}") from None
            raise ConfigError(f"model.{error.full_key}: {error.msg.splitlines()[0]}") from None
        except ValueError as error:  # TimmModelConfig.__post_init__: not a timm model
            raise ConfigError(f"model: {error}") from None
        return
    try:
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneConfig), node))
    except OmegaConfBaseException as error:
        if isinstance(error.__cause__, ValueError):  # BackboneConfig's own checks (mixer, options, direction)
            raise ConfigError(f"model: {error.__cause__}") from None
        raise ConfigError(f"model.{error.full_key}: {error.msg.splitlines()[0]}") from None
    except ValueError as error:  # raised by BackboneConfig.__post_init__ itself
        raise ConfigError(f"model: {error}") from None
    if config.direction in GRID_DIRECTIONS and config.grid is None:
        return  # an image head fills the grid in
    try:
        with torch.device("meta"):
            Block(config, drop_path=0.0)
    except (ValueError, TypeError, KeyError) as error:  # the mixer's own checks, or an option of the wrong kind
        raise ConfigError(f"model.mixer_options: {error}") from None


def check_target_node(node: DictConfig, where: str, set_by_code: set[str] = frozenset()) -> None:
    """Keys must be arguments of the `_target_` callable (unless it takes **kwargs) and simple types must match."""
    if "_target_" not in node:
        raise ConfigError(f"{where} needs a _target_ (the class or function it builds)")
    try:
        target = get_object(node._target_)
    except Exception as error:
        raise ConfigError(f"{where}._target_={node._target_!r} cannot be imported: {error}") from None
    signature = inspect.signature(target)
    params = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        hints = {}
    if not node.get("_partial_", False):  # a partial node gets the rest when it is called
        required = [
            name
            for name, p in params.items()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and name not in set_by_code
        ]
        missing = [name for name in required if name not in node]
        if missing:
            raise ConfigError(f"{where} needs {missing} ({node._target_} has no default for them)")
    for key in node:
        if key.startswith("_"):
            if key in ("_partial_", "_recursive_") and not isinstance(node[key], bool):
                raise ConfigError(f"{where}.{key}={node[key]!r} must be true or false")
            continue
        if key in set_by_code:
            raise ConfigError(f"{where}.{key} is set by the training script; remove it from the config")
        if key not in params:
            if takes_kwargs:
                continue
            allowed = sorted(set(params) - set_by_code - {"self"})
            raise ConfigError(f"{where}.{key} is not an argument of {node._target_}; allowed: {allowed}")
        value = OmegaConf.to_container(node, resolve=True)[key]
        if key in hints and not _simple_type_matches(hints[key], value):
            raise ConfigError(f"{where}.{key}={value!r} has the wrong type; {node._target_} expects {hints[key]}")


def _simple_type_matches(hint: Any, value: Any) -> bool:
    """Check int/float/str/bool (and their optionals); anything richer is left to the target."""
    if get_origin(hint) in (Union, UnionType):  # e.g. AdamW's lr: float | Tensor; a config value is never a Tensor
        return any(_simple_type_matches(a, value) or _may_become(a, value) for a in get_args(hint))
    if not _is_simple(hint):
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _may_become(hint: Any, value: Any) -> bool:
    """Whether a config value could still be of a non-simple hint (a class it is an instance of, a node Hydra
    instantiates, or a hint too rich to judge)."""
    if _is_simple(hint):
        return False
    if not isinstance(hint, type):
        return True  # typing constructs (list[int], Callable, ...): left to the target
    return isinstance(value, hint) or (isinstance(value, dict) and "_target_" in value)


def _is_simple(hint: Any) -> bool:
    return hint in (int, float, str, bool, type(None))
