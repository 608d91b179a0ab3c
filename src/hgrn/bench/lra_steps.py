"""Per-step training time of each LRA recipe on this GPU, and the GPU hours a full run of the recipe takes.

    python -m hgrn.bench.lra_steps [--model hgrn2] [--tasks listops text ...] [--out results/bench]
    -> results/bench/lra-steps-<model>-<gpu>-<date>.{json,md}  (hgrn.bench.report.write_dated)

Random inputs at the recipe's full length and batch (an upper bound: real batches are padded only to their
longest example), the recipe's precision (bf16 autocast, or fp32 where the recipe trains in it, as HGRN1's), forward +
backward + optimiser step, median time (synchronised) of 10 steps.
A recipe that accumulates micro-batches (Path-X on one GPU) is timed per optimiser step: all its micro-batches.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from hgrn import ops
from hgrn.bench.report import dated_record, write_dated
from hgrn.config import compose
from hgrn.data.spec import data_spec
from hgrn.training.build import build_datamodule, build_task

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
TRAIN_EXAMPLES = {  # training-set sizes of the LRA release (CIFAR-10: 45k after the validation split)
    "listops": 96_000,
    "text": 25_000,
    "retrieval": 147_086,
    "image": 45_000,
    "pathfinder": 160_000,
    "pathx": 160_000,
}


def random_batch(spec: dict, batch: int, device: str) -> dict[str, torch.Tensor]:
    length = spec["max_length"]

    def make() -> torch.Tensor:
        if spec.get("vocab_size"):
            return torch.randint(1, spec["vocab_size"], (batch, length), device=device)
        return torch.randn(batch, length, spec["input_dim"], device=device)

    out = {"inputs": make(), "mask": torch.ones(batch, length, dtype=torch.bool, device=device)}
    if spec.get("pair"):
        out |= {"inputs2": make(), "mask2": out["mask"].clone()}
    out["labels"] = torch.randint(0, spec["num_classes"], (batch,), device=device)
    return out


def time_recipe(experiment: str, steps: int = 10, device: str = "cuda", overrides: tuple[str, ...] = ()) -> dict:
    base = [f"experiment={experiment}", "paths.output_dir=/tmp/lra_steps", "logger=none", *overrides]
    cfg = compose(*base)
    cuda = device == "cuda"
    bf16 = str(cfg.trainer.precision).startswith("bf16")  # HGRN1's LRA recipes train in fp32
    datamodule = build_datamodule(cfg)
    spec = data_spec(datamodule)
    task = build_task(cfg, datamodule).to(device)
    optimizer = task.build_optimizer(bool(cfg.trainer.gradient_clip_val))  # as training builds it
    micro_batches = cfg.trainer.get("accumulate_grad_batches", 1)
    batch_size = cfg.data.batch_size * micro_batches
    batch = random_batch(spec, cfg.data.batch_size, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        for _ in range(micro_batches):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda and bf16):
                loss = task.shared_step(batch, "train")
            (loss / micro_batches).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        for _ in range(3):
            step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return {"experiment": experiment, "batch_size": batch_size, "error": "out of memory"}
    task_name = experiment.split("/")[-1]
    per_epoch = math.ceil(TRAIN_EXAMPLES[task_name] / batch_size)
    total_steps = per_epoch * cfg.trainer.max_epochs
    seconds = statistics.median(times)
    return {
        "experiment": experiment,
        "batch_size": batch_size,
        "length": spec["max_length"],
        "seconds_per_step": seconds,
        "steps": total_steps,
        "gpu_hours": seconds * total_steps / 3600,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def markdown(result: dict) -> str:
    """The GPU-hours table of main's result."""
    lines = [
        f"LRA recipes, {result['model']}, on {result['device']}, {result['date']} (one GPU, each recipe's precision,",
        f"random inputs at full length and batch, recurrence ops: {result['ops']})",
        "",
        "| experiment | batch | length | s/step | steps | GPU hours | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['experiment']} | {r['batch_size']} | - | {r['error']} | - | - | - |")
            continue
        lines.append(
            f"| {r['experiment']} | {r['batch_size']} | {r['length']} | {r['seconds_per_step']:.3f} | {r['steps']} "
            f"| {r['gpu_hours']:.1f} | {r['peak_memory_gib']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hgrn2", choices=["hgrn2", "hgrn1", "gla", "attention"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks:
        rows.append(time_recipe(f"lra/{args.model}/{task}"))
        print(json.dumps(rows[-1]), flush=True)
        torch.cuda.empty_cache()
    backend = "Triton kernels" if ops.USE_KERNELS else "PyTorch reference"
    result = dated_record("lra-steps", "python -m hgrn.bench.lra_steps " + " ".join(argv), model=args.model,
                          ops=backend, rows=rows)  # fmt: skip
    text = markdown(result)
    print(text, end="")
    write_dated(result, text, args.out, f"lra-steps-{args.model}")


if __name__ == "__main__":
    main()
