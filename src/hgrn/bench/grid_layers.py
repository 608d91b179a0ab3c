"""The 2-D token mixers at the shapes they train at: the ViTs (B 256, a 16 x 16 grid, d 192 / 384, expand ratio 8)
and LRA's grid tasks (Image, Pathfinder: 32 x 32; Path-X: 128 x 128 in series), each as its experiment builds it,
beside the peer layer of the same run (DeiT's attention at its own 14 x 14 + 1 tokens for the ViTs).

    python -m hgrn.bench.grid_layers [--cases vit-hgrn2-tiny lra-image ...] [--out results/bench]
    python -m hgrn.bench.grid_layers --smoke --out <dir>     # CPU, tiny shapes (tests)

-> results/bench/grid-layers-<gpu>-<date>.{json,md}. One layer's mixer (the first block's) on random inputs
[B, T, d] under bf16 autocast: forward, and forward + backward to the input and every weight; median ms
(triton.testing.do_bench on the GPU, 3 timed calls on the CPU).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hgrn.bench.report import dated_record, write_dated
from hgrn.config import compose
from hgrn.training.build import build_datamodule, build_task

# case -> (experiment, batch per step or None for the recipe's, the DeiT whose attention is the peer or None)
CASES = {
    "vit-hgrn2-tiny": ("imagenet/hgrn2-tiny", 256, "deit_tiny_patch16_224"),
    "vit-hgrn1-tiny": ("imagenet/hgrn1-tiny", 256, "deit_tiny_patch16_224"),
    "vit-hgrn2-small": ("imagenet/hgrn2-small", 256, "deit_small_patch16_224"),
    "lra-image": ("lra/hgrn2/image", None, None),
    "lra-pathfinder": ("lra/hgrn2/pathfinder", None, None),
    "lra-pathx": ("lra/hgrn2/pathx", None, None),
}
SMOKE = {  # tiny versions for the CPU test
    "vit-hgrn2-tiny": ["experiment=imagenet/fashion_mnist/hgrn2-tiny", "model.n_layers=1", "model.d_model=16",
                       "model.mixer_options.expand_ratio=4"],
    "vit-hgrn1-tiny": ["experiment=imagenet/fashion_mnist/hgrn1-tiny", "model.n_layers=1", "model.d_model=16"],
    "lra-image": ["experiment=lra/hgrn2/image", "model.n_layers=1", "model.d_model=16"],
}  # fmt: skip


def first_mixer(overrides: list[str]) -> tuple[nn.Module, int, int, int | None]:
    """(the first block's token mixer, tokens, d_model, the recipe's batch per micro-step) of an experiment."""
    cfg = compose(*overrides, "paths.output_dir=/tmp/grid_layers", "logger=none")
    task = build_task(cfg, build_datamodule(cfg))
    backbone = task.model.backbone
    if backbone.config.grid is not None:
        tokens = math.prod(backbone.config.grid)
    else:  # a ViT scanning its patch sequence (HGRN1: both ways): the image's patches
        tokens = (task.model.config.image_size // task.model.config.patch_size) ** 2
    return backbone.blocks[0].mixer, tokens, backbone.config.d_model, cfg.data.get("batch_size")


def timed(run: Callable[[], object], cuda: bool) -> float:
    """Median ms of `run`."""
    if cuda:
        from triton.testing import do_bench

        return do_bench(run)
    run()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_layer(layer: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor], shape: tuple[int, ...],
               device: str) -> tuple[float, float]:  # fmt: skip
    """(forward ms, forward + backward ms) of `layer` on random x [B, T, d] under bf16 autocast (CUDA)."""
    cuda = device == "cuda"
    x = torch.randn(*shape, device=device, requires_grad=True)
    leaves = [x, *params]

    def forward() -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            return layer(x)

    grad = torch.randn_like(forward())

    def both() -> object:
        return torch.autograd.grad(forward(), leaves, grad, allow_unused=True)

    with torch.no_grad():
        fwd = timed(forward, cuda)
    return fwd, timed(both, cuda)


def measure(case: str, device: str, smoke: bool) -> dict:
    experiment, batch, peer = CASES[case]
    overrides = SMOKE[case] if smoke else [f"experiment={experiment}"]
    mixer, tokens, d, recipe_batch = first_mixer(overrides)
    batch = 2 if smoke else batch or recipe_batch
    mixer = mixer.to(device)
    bound = torch.zeros(d, device=device) if mixer.uses_lower_bound else None
    params = [p for p in mixer.parameters() if p.requires_grad]
    fwd, both = time_layer(lambda x: mixer(x, bound), params, (batch, tokens, d), device)
    row = {"case": case, "experiment": experiment, "direction": mixer.direction, "B": batch, "T": tokens, "d": d,
           "fwd_ms": fwd, "fwd_bwd_ms": both}  # fmt: skip
    if peer is not None and not smoke:
        import timm

        deit = timm.create_model(peer).to(device)
        attention = deit.blocks[0].attn
        peer_tokens = deit.patch_embed.num_patches + 1
        peer_fwd, peer_both = time_layer(attention, list(attention.parameters()), (batch, peer_tokens, d), device)
        row |= {"peer": f"{peer} attention", "peer_T": peer_tokens, "peer_fwd_ms": peer_fwd,
                "peer_fwd_bwd_ms": peer_both}  # fmt: skip
    return row


def run(args: argparse.Namespace) -> dict:
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    rows = []
    for case in args.cases:
        rows.append(measure(case, device, args.smoke))
        print(f"{case}: {rows[-1]['fwd_ms']:.3f} / {rows[-1]['fwd_bwd_ms']:.3f} ms", flush=True)
    return dated_record(
        "grid-layers",
        "python -m hgrn.bench.grid_layers " + " ".join(args.argv),
        setting="bf16 autocast, fp32 weights" if device == "cuda" else "CPU, fp32",
        rows=rows,
    )


def markdown(result: dict) -> str:
    lines = [
        f"# 2-D token mixers at their training shapes, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`: {result['setting']}; one mixer (the first block's), median ms.",
        "",
        "| case | direction | B x T x d | fwd ms | fwd+bwd ms | peer (same run) | peer fwd / fwd+bwd ms | "
        "fwd+bwd vs peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        peer, peer_ms, ratio = "-", "-", "-"
        if "peer" in r:
            peer = f"{r['peer']} (T {r['peer_T']})"
            peer_ms = f"{r['peer_fwd_ms']:.3f} / {r['peer_fwd_bwd_ms']:.3f}"
            ratio = f"{r['fwd_bwd_ms'] / r['peer_fwd_bwd_ms']:.2f}x"
        lines.append(
            f"| {r['case']} | {r['direction']} | {r['B']} x {r['T']} x {r['d']} | {r['fwd_ms']:.3f} | "
            f"{r['fwd_bwd_ms']:.3f} | {peer} | {peer_ms} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny HGRN2 ViT and LRA Image mixers")
    args = parser.parse_args(argv)
    args.argv = list(argv or [])
    if args.smoke:
        args.cases = [c for c in args.cases if c in SMOKE]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = run(args)
    write_dated(result, markdown(result), args.out, "grid-layers")


if __name__ == "__main__":
    main()
