"""Token mixers (HGRN1, HGRN2, GLA, attention), the GLU channel mixer, norms, lower bounds and scan directions."""

from __future__ import annotations

import inspect

from torch import nn

from hgrn.layers.attention import AttentionMixer
from hgrn.layers.directions import DIRECTIONS, GRID_DIRECTIONS, mix_directions
from hgrn.layers.gla import GLAMixer
from hgrn.layers.glu import GLU
from hgrn.layers.hgrn1 import HGRN1Mixer
from hgrn.layers.hgrn2 import HGRN2Mixer
from hgrn.layers.lower_bounds import LayerLowerBounds
from hgrn.layers.norms import NORMS, make_norm
from hgrn.ops.directions import scan_directions

MIXERS: dict[str, type[nn.Module]] = {
    "hgrn1": HGRN1Mixer,
    "hgrn2": HGRN2Mixer,
    "gla": GLAMixer,
    "attention": AttentionMixer,
}
_SET_BY_BACKBONE = ("d_model", "direction", "grid")


def mixer_options(name: str) -> tuple[str, ...]:
    """The keyword options a mixer accepts besides those the backbone sets."""
    if name not in MIXERS:
        raise ValueError(f"mixer={name!r} is not a known token mixer; choose one of {sorted(MIXERS)}")
    params = inspect.signature(MIXERS[name]).parameters
    return tuple(p for p in params if p not in _SET_BY_BACKBONE)


def build_mixer(
    name: str, d_model: int, direction: str = "causal", grid: tuple[int, int] | None = None, **options
) -> nn.Module:
    """Build a token mixer by name; unknown names and options raise ValueError listing what is allowed."""
    allowed = mixer_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"mixer_options {unknown} are not options of mixer {name!r}; allowed: {list(allowed)}")
    return MIXERS[name](d_model, direction=direction, grid=grid, **options)


__all__ = [
    "DIRECTIONS",
    "GLU",
    "GRID_DIRECTIONS",
    "MIXERS",
    "NORMS",
    "AttentionMixer",
    "GLAMixer",
    "HGRN1Mixer",
    "HGRN2Mixer",
    "LayerLowerBounds",
    "build_mixer",
    "make_norm",
    "mix_directions",
    "mixer_options",
    "scan_directions",
]
