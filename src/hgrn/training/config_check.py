"""Validate a composed training config before anything is built or loaded.

An unknown key or a value of the wrong type fails here, with the full key named: the model node is checked
against `BackboneConfig` (OmegaConf structured config), every `_target_` node against its target's signature.
"""

from __future__ import annotations

import inspect
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
}
TARGET_NODES = ("data", "task", "trainer", "optim", "sched")
SET_BY_TRAIN = {"task": {"backbone", "data", "optim", "sched"}, "trainer": {"logger", "callbacks", "default_root_dir"}}


def check_config(cfg: DictConfig) -> None:
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


def check_model(node: DictConfig) -> None:
    """Types and keys through the BackboneConfig schema, then one block built on the meta device (no memory) so the
    mixer's own checks (expand_ratio divides d_model, heads divide the width, ...) run now."""
    try:
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneConfig), node))
    except OmegaConfBaseException as error:
        if isinstance(error.__cause__, ValueError):  # BackboneConfig's own checks (mixer, options, direction)
            raise ConfigError(f"model: {error.__cause__}") from None
        raise ConfigError(f"model.{error.full_key}: {error.msg.splitlines()[0]}") from None
    if config.direction in GRID_DIRECTIONS and config.grid is None:
        return  # an image head fills the grid in
    try:
        with torch.device("meta"):
            Block(config, drop_path=0.0)
    except ValueError as error:
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
    for key in node:
        if key.startswith("_"):
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
    if get_origin(hint) in (Union, UnionType):
        args = get_args(hint)
        return any(_simple_type_matches(a, value) for a in args) if all(_is_simple(a) for a in args) else True
    if not _is_simple(hint):
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _is_simple(hint: Any) -> bool:
    return hint in (int, float, str, bool, type(None))
