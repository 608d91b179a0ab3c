"""The backbone every head shares: pre-norm blocks (token mixer + GLU channel mixer) with layer-wise lower bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from hgrn import ops
from hgrn.layers import GLU, MIXERS, LayerLowerBounds, build_mixer, make_norm, mixer_options
from hgrn.layers.directions import DIRECTIONS
from hgrn.layers.norms import NORMS

State = Any  # a mixer's decoding state: a tensor, or a KV cache for attention


@dataclass
class BackboneConfig:
    """Everything that defines the stack of blocks; the mixer's own options go in `mixer_options`."""

    d_model: int = 512
    n_layers: int = 6
    mixer: str = "hgrn2"  # hgrn1 | hgrn2 | gla | attention
    mixer_options: dict[str, Any] = field(default_factory=dict)
    direction: str = "causal"  # causal | bidirectional | 2d (parallel) | 2d_series: see hgrn.layers.directions
    grid: tuple[int, int] | None = None  # (height, width) of the token grid for the 2-D directions (images: the head)
    glu_ratio: float = 2.0  # GLU hidden width = glu_ratio * d_model; 0 drops the channel mixer
    glu_act: str = "silu"
    glu_bias: bool = False
    glu_dropout: float = 0.0  # on the GLU's activated gate (the official LRA GLU applies the model's dropout there)
    identity_channel_mixer: bool = False  # with glu_ratio 0: the channel sublayer still adds its norm, x + norm(x)
    norm: str = "rmsnorm"  # the blocks' pre-norms and the final norm
    batchnorm_group: int | None = None  # norm=batchnorm: statistics over groups of this many sequences in training
    lower_bounds: bool = True  # learned layer-wise forget-gate lower bounds (HGRN mixers only)
    input_dropout: float = 0.0  # on the embedded inputs, before the first block (Zoology's embed_dropout)
    dropout: float = 0.0  # residual dropout on each sublayer's output
    drop_path: float = 0.0  # stochastic depth, rising linearly to this rate at the last block
    scaled_out_proj_init: bool = False  # init_weights draws the mixers' out_proj with std / sqrt(2 n_layers)

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.n_layers < 1:
            raise ValueError(f"d_model={self.d_model} and n_layers={self.n_layers} must be positive")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer={self.mixer!r} is not a known token mixer; choose one of {sorted(MIXERS)}")
        self.mixer_options = dict(self.mixer_options)
        unknown = sorted(set(self.mixer_options) - set(mixer_options(self.mixer)))
        if unknown:
            raise ValueError(
                f"mixer_options {unknown} are not options of mixer {self.mixer!r}; "
                f"allowed: {list(mixer_options(self.mixer))}"
            )
        self.grid = None if self.grid is None else tuple(self.grid)
        if self.direction not in DIRECTIONS:  # the grid of a 2-D backbone may be filled in by the head
            raise ValueError(f"direction={self.direction!r} is not known; choose one of {DIRECTIONS}")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not a known normalisation; choose one of {NORMS}")
        if self.identity_channel_mixer and self.glu_ratio > 0:
            raise ValueError(
                f"identity_channel_mixer=True replaces the GLU, so it needs glu_ratio=0; got glu_ratio={self.glu_ratio}"
            )


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + channel(norm(x)) where the channel mixer is a GLU, the
    identity (Zoology's TransformerBlock with state_mixer=Identity, whose norm output still joins the stream), or
    absent."""

    def __init__(self, config: BackboneConfig, drop_path: float) -> None:
        super().__init__()
        d = config.d_model
        self.mixer_norm = make_norm(config.norm, d, batchnorm_group=config.batchnorm_group)
        self.mixer = build_mixer(config.mixer, d, config.direction, config.grid, **config.mixer_options)
        channel = config.glu_ratio > 0 or config.identity_channel_mixer
        self.glu_norm = make_norm(config.norm, d, batchnorm_group=config.batchnorm_group) if channel else None
        self.glu = None
        if config.identity_channel_mixer:
            self.glu = nn.Identity()
        elif channel:
            self.glu = GLU(d, int(config.glu_ratio * d), config.glu_act, config.glu_bias, config.glu_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, lower_bound: Tensor | None, mask: Tensor | None) -> Tensor:
        x = x + self.drop_path(self.dropout(self.mixer(self.mixer_norm(x), lower_bound, mask)))
        if self.glu is not None:
            x = x + self.drop_path(self.dropout(self.glu(self.glu_norm(x))))
        return x

    def step(self, x: Tensor, state: State, lower_bound: Tensor | None) -> tuple[Tensor, State]:
        y, state = self.mixer.step(self.mixer_norm(x), state, lower_bound)
        x = x + y
        if self.glu is not None:
            x = x + self.glu(self.glu_norm(x))
        return x, state


class Backbone(nn.Module):
    """[B, T, d] -> [B, T, d]. Also runs one token at a time on carried states (`step`) for generation."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        rates = torch.linspace(0, config.drop_path, config.n_layers, device="cpu").tolist()  # also under meta
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        bounded = config.lower_bounds and self.blocks[0].mixer.uses_lower_bound
        self.lower_bounds = LayerLowerBounds(config.n_layers, config.d_model) if bounded else None
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.norm = make_norm(config.norm, config.d_model, batchnorm_group=config.batchnorm_group)
        self.replays_graphs = False  # set by compile_blocks(mode="reduce-overhead")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.input_dropout(x)
        for block, bound in zip(self.blocks, self._bounds(), strict=True):
            x = self._owned(block(x, bound, mask))
        return self._owned(self.norm(x))

    def _owned(self, x: Tensor) -> Tensor:
        """A block's output, copied out of its CUDA graph's memory pool where the next replay would overwrite it.
        Without autograd (validation, test) every call of a separately compiled block starts a new generation of
        torch's CUDA-graph trees, which frees the previous block's outputs while the next block still reads them
        (pytorch#152887; seen on an H100 in MQAR's validation under task.compile=graphs). In training the pending
        backward keeps one generation, so no copy is made."""
        return x.clone() if self.replays_graphs and not torch.is_grad_enabled() else x

    def step(self, x: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
        """x [B, d] for one position; states from `initial_state` or the previous step."""
        new_states = []
        for block, bound, state in zip(self.blocks, self._bounds(), states, strict=True):
            x, state = block.step(x, state, bound)
            new_states.append(state)
        return self.norm(x), new_states

    def initial_state(self, batch_size: int) -> list[State]:
        return [block.mixer.initial_state(batch_size) for block in self.blocks]

    @torch.no_grad()
    def state_numel(self, context_length: int) -> int:
        """How many numbers one sequence's decoding state holds after `context_length` tokens, over all layers: the
        memory a model can recall from (Zoology's "state size"). Constant for the recurrent mixers (per layer HGRN1
        2 d complex or d real, HGRN2 d x expand_ratio, GLA heads x d_k x d_v); attention's key-value cache grows by
        2 d a token a layer. Read off `step` itself, the states after one and two tokens, so it counts what the
        model really carries whatever its options."""
        if self.config.direction != "causal" or context_length < 1:
            raise ValueError(
                f"state_numel needs a causal backbone and context_length >= 1; got direction="
                f"{self.config.direction!r}, context_length={context_length}"
            )
        weight = next(self.parameters())
        x = weight.new_zeros(1, self.config.d_model)
        counts = []
        states = self.initial_state(1)
        for _ in range(2):
            _, states = self.step(x, states)
            counts.append(sum(t.numel() for t in _tensors(states)))
        return counts[0] + (context_length - 1) * (counts[1] - counts[0])

    def compile_blocks(self, whole: bool = False, mode: str | None = None) -> None:
        """torch.compile, in place (parameter names unchanged), each block's norms and GLU channel mixer and the final
        norm; with `whole`, each block entire, its token mixer's projections, activations, recurrence and norm too
        (one graph: the recurrence kernels are custom ops, hgrn.ops.dispatch; on the CPU the PyTorch reference runs
        eagerly between graphs). The blocks share their code, so each piece compiles once for all blocks. `mode`:
        torch.compile's ("reduce-overhead": CUDA graphs)."""
        ops.load_kernels()  # before any graph is traced: its import would break the graph
        ops.start_compile_workers()
        for block in self.blocks:
            parts = (block,) if whole else (block.mixer_norm, block.glu_norm, block.glu)
            for part in parts:
                if part is not None:
                    compile_module(part, mode)
        compile_module(self.norm, mode)
        self.replays_graphs = mode == "reduce-overhead"

    def _bounds(self) -> list[Tensor | None]:
        if self.lower_bounds is None:
            return [None] * len(self.blocks)
        return list(self.lower_bounds())


def compile_module(module: nn.Module, mode: str | None = None) -> None:
    """torch.compile `module` in place (parameter names unchanged; `mode` as torch.compile's). A torch.nn built-in
    (nn.LayerNorm, nn.RMSNorm, nn.Embedding) gets its forward compiled instead: `Module.compile` compiles `_call_impl`,
    which like such a forward lies in a file Dynamo skips, and before pytorch#185722 (in the GPU machine's torch 2.11)
    no frame was captured, so the module ran eagerly (an MQAR step's embedding backward and final LayerNorm on an
    H100, 0.8 of 3.0 ms of kernels, session 36). A forward of our own (blocks, GLU, SequenceBatchNorm) is compiled
    through `Module.compile`."""
    if type(module).forward.__module__.startswith("torch.nn."):
        module.forward = torch.compile(module.forward, mode=mode)
    else:
        module.compile(mode=mode)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) for linear and embedding weights, zero biases (the official HGRN initialisation); applied to every
    module of a model (`model.apply`). A backbone with scaled_out_proj_init then redraws its mixers' output
    projections from N(0, std / sqrt(2 n_layers)), Zoology's rescaled pre-norm residual init (0.01 at 2 layers); its
    blocks come before it in `apply`'s order, so this draw is the last."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, Backbone) and module.config.scaled_out_proj_init:
        for block in module.blocks:
            nn.init.normal_(block.mixer.out_proj.weight, std=std / math.sqrt(2 * module.config.n_layers))


def as_backbone_config(value: BackboneConfig | dict[str, Any]) -> BackboneConfig:
    """Accept a config or a plain mapping (as Hydra and JSON give them); unknown keys raise ValueError."""
    if isinstance(value, BackboneConfig):
        return value
    return build_dataclass(BackboneConfig, value, "backbone")


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """cls(**values), with unknown keys reported by name rather than as a TypeError."""
    allowed = list(cls.__dataclass_fields__)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {allowed}")
    return cls(**values)


def _tensors(state: State) -> list[Tensor]:
    """The tensors of a decoding state (a tensor, or nested tuples and lists of them: attention's KV cache)."""
    if isinstance(state, Tensor):
        return [state]
    return [t for part in state for t in _tensors(part)]
