"""ImageNet training step of each image model as its experiment builds it: images/s and peak memory at B 256 in bf16,
and the GPU hours of the 300-epoch recipe -> results/bench/vit-step-<sizes>[-<compile>]-<gpu>-<date>.{json,md}.

    python -m hgrn.bench.vit_step [--models hgrn2-tiny hgrn1-tiny deit-tiny ...] [--batch 256] [--out results/bench]
    python -m hgrn.bench.vit_step --smoke --out <dir>     # CPU, tiny models on 28-pixel images (tests)
    python -m hgrn.bench.vit_step --profile ...           # also where a step's time goes (torch.profiler)
    python -m hgrn.bench.vit_step --compile false ...     # task.compile=false|parts|blocks|graphs (default: the
                                                          # recipe's, blocks; a timm model compiled whole)

A step is what training does: timm's Mixup / CutMix on the batch, forward under bf16 autocast, SoftTargetCrossEntropy,
backward, AdamW (fused on CUDA); random images [B, 3, 224, 224] in channels-last, fp32 weights. Median synchronised
time of `steps` steps after `warmup`; peak memory is torch.cuda.max_memory_allocated over the model's steps. The smoke
run stays eager unless --compile says otherwise (CPU compilation outlasts its steps). Targets
(issue 14): every HGRN ViT at least 0.5x its DeiT's images/s, peak memory at most 2x DeiT's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hgrn.bench.report import dated_record, write_dated
from hgrn.bench.step_profile import profile_steps
from hgrn.config import compose
from hgrn.training.base import COMPILE_CHOICES, TaskModule
from hgrn.training.build import build_datamodule, build_task
from hgrn.training.optim import param_groups

MODELS = ("hgrn2-tiny", "hgrn1-tiny", "deit-tiny", "hgrn2-small", "hgrn1-small", "deit-small")
IMAGENET_TRAIN_IMAGES = 1_281_167
EPOCHS = 300
SMOKE_OVERRIDES = {
    "hgrn2-tiny": ["model.n_layers=1", "model.d_model=16", "model.mixer_options.expand_ratio=4"],
    "hgrn1-tiny": ["model.n_layers=1", "model.d_model=16"],
    "deit-tiny": ["+model.model_args.depth=1", "+model.model_args.embed_dim=16", "+model.model_args.num_heads=2"],
}


def build(model: str, smoke: bool, compile: str | None = None) -> TaskModule:
    """The task of experiment imagenet/<model> (imagenet/fashion_mnist/<model> with a tiny model for the smoke run),
    with task.compile=`compile` (None: the recipe's; the smoke run's: false)."""
    if smoke:
        overrides = [f"experiment=imagenet/fashion_mnist/{model}", *SMOKE_OVERRIDES[model]]
        compile = compile or "false"
    else:
        overrides = [f"experiment=imagenet/{model}"]
    if compile is not None:
        overrides.append(f"task.compile={compile}")
    cfg = compose(*overrides, "paths.output_dir=/tmp/vit_step", "logger=none")
    return build_task(cfg, build_datamodule(cfg))


def training_step(task: TaskModule, batch: int, device: str) -> Callable[[], None]:
    """One optimiser step of `task` on a fixed random batch: images [B, 3, S, S] (channels-last), labels [B]."""
    size = task.hparams["image_size"]
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, task.hparams["data"]["num_classes"], (batch,), device=device)
    cuda = device == "cuda"
    optimizer = torch.optim.AdamW(param_groups(task.model), lr=1e-4, fused=cuda)

    def step() -> None:
        mixed, targets = task.mixup(images.clone(), labels)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            logits = task.model(mixed)
        loss = task.train_criterion(logits.float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(
    model: str, batch: int, steps: int, warmup: int, device: str, smoke: bool, profile: bool = False,
    compile: str | None = None,
) -> dict:  # fmt: skip
    """images/s (median step), peak memory and the 300-epoch GPU hours of one model (profile: and the kernels that
    take a step's time; compile: task.compile, None for the recipe's)."""
    task = build(model, smoke, compile).to(device).train()
    step = training_step(task, batch, device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    first = time.perf_counter() - started
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    images_per_s = batch / median
    extra = {"profile": profile_steps(step, cuda)} if profile else {}
    return {
        "model": model,
        "parameters": task.num_parameters(),
        "compile": str(task.hparams["compile"]).lower(),
        "image_size": task.hparams["image_size"],
        "batch": batch,
        "step_ms": median * 1e3,
        "first_step_s": first,
        "images_per_s": images_per_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "gpu_hours_300_epochs": IMAGENET_TRAIN_IMAGES * EPOCHS / images_per_s / 3600,
        **extra,
    }


def against_deit(rows: list[dict]) -> None:
    """Add each model's images/s and memory relative to the DeiT of its size, where that DeiT was measured."""
    deit = {row["model"].split("-")[1]: row for row in rows if row["model"].startswith("deit")}
    for row in rows:
        peer = deit.get(row["model"].split("-")[1])
        if peer is None:
            continue
        row["speed_vs_deit"] = row["images_per_s"] / peer["images_per_s"]
        if row["peak_memory_gib"] is not None:
            row["memory_vs_deit"] = row["peak_memory_gib"] / peer["peak_memory_gib"]


def markdown(result: dict) -> str:
    lines = [
        f"# ImageNet training step, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`: B {result['batch']}, {result['setting']}; median of {result['steps']} steps. "
        "GPU hours: 300 epochs of 1,281,167 images at this rate.",
        "",
        "| model | parameters | images/s | vs DeiT | peak GiB | vs DeiT | step ms | first step s | GPU hours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        memory = "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.1f}"
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['images_per_s']:,.0f} | "
            f"{_ratio(row, 'speed_vs_deit')} | {memory} | {_ratio(row, 'memory_vs_deit')} | {row['step_ms']:.1f} | "
            f"{row['first_step_s']:.1f} | {row['gpu_hours_300_epochs']:,.1f} |"
        )
    for row in result["rows"]:
        if "profile" in row:
            lines += ["", f"Where a {row['model']} step's GPU time goes (torch.profiler):", "", row["profile"]]
    return "\n".join(lines) + "\n"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.2f}x" if key in row else "-"


def run(args: argparse.Namespace) -> dict:
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    rows = []
    for model in args.models:
        rows.append(measure(model, args.batch, args.steps, args.warmup, device, args.smoke, args.profile, args.compile))
        print(f"{model}: {rows[-1]['images_per_s']:,.0f} images/s", flush=True)
    against_deit(rows)
    return dated_record(
        "vit-step",
        "python -m hgrn.bench.vit_step " + " ".join(args.argv),
        setting=("fp32 weights, bf16 autocast, fused AdamW, Mixup/CutMix" if device == "cuda" else "CPU, fp32")
        + ", task.compile="
        + "/".join(dict.fromkeys(row["compile"] for row in rows)),
        batch=args.batch,
        steps=args.steps,
        rows=rows,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--smoke", action="store_true", help="CPU, small HGRN2 / HGRN1 / DeiT, 28-pixel images")
    parser.add_argument("--profile", action="store_true", help="also the kernels that take each model's step time")
    compile_choices = [str(choice).lower() for choice in COMPILE_CHOICES]
    parser.add_argument("--compile", choices=compile_choices, help="task.compile (default: the recipe's)")
    args = parser.parse_args(argv)
    args.argv = list(argv or [])
    if args.smoke:
        args.models = [m for m in args.models if m in SMOKE_OVERRIDES]
        args.batch, args.steps, args.warmup = min(args.batch, 4), 2, 0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = run(args)
    sizes = "-".join(dict.fromkeys(model.rsplit("-", 1)[-1] for model in args.models))  # one file per model size
    compiled = f"-{args.compile}" if args.compile else ""  # and per --compile (none: the recipe's)
    write_dated(result, markdown(result), args.out, f"vit-step-{sizes}{compiled}")


if __name__ == "__main__":
    main()
