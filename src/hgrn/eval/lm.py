"""One evaluation record of a language-model checkpoint: the perplexity of a split and the lm-eval tasks, as flat
metrics in one JSON file. What `make eval-lm CKPT=...` runs.

    python -m hgrn.eval.lm --ckpt <run>/checkpoints/best.ckpt [--split test] [--data tokens.bin|text.txt]
        [--block-size 512] [--stride 256] [--tasks piqa,hellaswag] [--limit 100] [--out record.json]

Perplexity: blocks and sliding window (hgrn.eval.perplexity) over the split's whole stream, from the run's own data
unless --data gives a file (hgrn.eval.streams). lm-eval: the tasks of tasks/lm_eval/ (local data; lm-eval's stock
tasks, which read the hub, are not indexed), zero-shot.
The record is an evaluation.json (hgrn.results.write_evaluation, evaluation "lm"), by default in
<run>/eval-lm/<checkpoint stem>/, where `make tables` finds it. Metrics: <split>/ppl (non-overlapping blocks of the
training length, the protocol of the training run's own test loop), <split>/ppl_sliding_<S>, and <task>/<metric>
(acc, acc_norm, perplexity, and their <metric>_stderr; accuracies as fractions). `--split none` or `--tasks none`
skips that part. A --limit, --data, --block-size or --stride is recorded as an override: such a record is not the
protocol and stays out of the paper tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hgrn.eval.checkpoint import LoadedLM, load_causal_lm
from hgrn.eval.cli import exit_on_bad_input
from hgrn.eval.perplexity import Perplexity, perplexity
from hgrn.eval.streams import file_tokens, run_tokens
from hgrn.eval.tasks import DEFAULT_TASKS, TASKS_DIR
from hgrn.results import EvaluationRecord, write_evaluation
from hgrn.training.run import report

NONE = "none"
BOOTSTRAP_ITERS = 1000  # lm-eval's 100,000 resamples of LAMBADA's perplexity take minutes of pure Python


def split_perplexities(
    loaded: LoadedLM, tokens: Any, block_size: int, stride: int, batch_size: int
) -> list[Perplexity]:
    """Blocks, and the sliding window unless the stride is the block (then the two are the same)."""
    results = [perplexity(loaded.model, tokens, block_size, batch_size=batch_size)]
    if stride != block_size:
        results.append(perplexity(loaded.model, tokens, block_size, stride, batch_size))
    return results


def run_lm_eval(
    loaded: LoadedLM, tasks: Sequence[str], limit: int | None, batch_size: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Zero-shot lm-eval on the local task YAMLs -> (flat metrics lm_eval/<task>/<metric>, lm-eval's task versions)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from hgrn.eval.harness import HGRNLM

    results = simple_evaluate(
        model=HGRNLM(pretrained=loaded.model, batch_size=batch_size, max_length=loaded.max_length),
        tasks=list(tasks),
        num_fewshot=0,
        limit=limit,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),  # stock tasks need the hub
        log_samples=False,
        bootstrap_iters=BOOTSTRAP_ITERS,
    )
    return flat_lm_eval_metrics(results["results"]), results.get("versions", {})


def flat_lm_eval_metrics(per_task: dict[str, dict[str, Any]]) -> dict[str, float]:
    """lm-eval's {task: {"acc,none": x, "acc_stderr,none": s, "alias": ...}} -> {"task/acc": x, ...}; values
    lm-eval could not compute ("N/A" stderr of a single example) are left out."""
    metrics = {}
    for task, values in per_task.items():
        for key, value in values.items():
            name, _, filter_name = key.partition(",")
            if filter_name and isinstance(value, int | float):
                suffix = "" if filter_name == "none" else f"/{filter_name}"
                metrics[f"{task}/{name}{suffix}"] = float(value)
    return metrics


def evaluate_lm(
    checkpoint: Path,
    *,
    split: str | None = "test",
    data: Path | None = None,
    block_size: int | None = None,
    stride: int | None = None,
    tasks: Sequence[str] = DEFAULT_TASKS,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """The evaluation record of a checkpoint (see the module's docstring); split=None or tasks=[] skip a part."""
    loaded = load_causal_lm(checkpoint, device)
    metrics: dict[str, float] = {}
    record: dict[str, Any] = {"checkpoint": str(checkpoint.resolve()), "split": split, "tasks": list(tasks)}
    if split is not None:
        block_size = block_size or loaded.max_length
        if block_size is None:
            raise ValueError("the checkpoint does not record its training block size; give --block-size")
        stride = stride or max(block_size // 2, 1)
        tokens = file_tokens(data) if data is not None else run_tokens(loaded.run_dir, split)
        record["data"] = str(data.resolve()) if data is not None else f"{loaded.run_dir}/.hydra/config.yaml: data"
        results = split_perplexities(loaded, tokens, block_size, stride, batch_size)
        metrics.update({f"{split}/{perplexity_metric(p.name)}": p.ppl for p in results})
        record["perplexity"] = {p.name: {**asdict(p), "ppl": p.ppl} for p in results}
    if tasks:
        task_metrics, record["lm_eval_task_versions"] = run_lm_eval(loaded, tasks, limit, batch_size)
        metrics.update(task_metrics)
    record.update(metrics=metrics, limit=limit, num_fewshot=0)
    return record


def perplexity_metric(protocol: str) -> str:
    """blocks_<B> -> ppl (the training loop's protocol); sliding_<S> -> ppl_sliding_<S>."""
    return "ppl" if protocol.startswith("blocks") else f"ppl_{protocol}"


def write_lm_evaluation(checkpoint: Path, record: dict[str, Any], overrides: list[str], path: Path) -> EvaluationRecord:
    """The evaluation.json of `record` for the run that wrote `checkpoint` (its experiment from the run's config)."""
    run_dir = checkpoint.resolve().parent.parent
    config = run_dir / ".hydra" / "config.yaml"
    experiment = OmegaConf.load(config).get("name", "custom") if config.is_file() else "custom"
    details = {k: v for k, v in record.items() if k != "metrics"}
    return write_evaluation(
        path,
        experiment=experiment,
        checkpoint=checkpoint,
        metrics=record["metrics"],
        evaluation="lm",
        overrides=overrides,
        extra=details,
    )


def protocol_overrides(args: argparse.Namespace) -> list[str]:
    """The options that change what is measured, as overrides (tasks and split only choose what is reported)."""
    changed = {"limit": args.limit, "data": args.data, "block_size": args.block_size, "stride": args.stride}
    return [f"{key}={value}" for key, value in changed.items() if value is not None]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hgrn.eval.lm", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True, help="a checkpoint of an LM run (python -m hgrn.train)")
    p.add_argument("--split", default="test", help="the split whose perplexity is measured; 'none' skips it")
    p.add_argument("--data", type=Path, help="token stream file (.npy, .bin uint16, .txt); default: the run's data")
    p.add_argument("--block-size", type=int, help="tokens per window; default: the training block size")
    p.add_argument("--stride", type=int, help="sliding-window stride; default: half the block")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated lm-eval tasks; 'none' skips")
    p.add_argument("--limit", type=int, help="examples per lm-eval task (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ...; default: the GPU if any")
    p.add_argument("--out", type=Path, help="the record (default: <run>/eval-lm/<checkpoint stem>/evaluation.json)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    tasks = [] if args.tasks == NONE else [t for t in args.tasks.split(",") if t]
    with exit_on_bad_input():
        record = evaluate_lm(
            args.ckpt,
            split=None if args.split == NONE else args.split,
            data=args.data,
            block_size=args.block_size,
            stride=args.stride,
            tasks=tasks,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
        )
    path = args.out or args.ckpt.resolve().parent.parent / "eval-lm" / args.ckpt.stem / "evaluation.json"
    write_lm_evaluation(args.ckpt, record, protocol_overrides(args), path)
    report(f"{args.ckpt}", record["metrics"], path, loggers=[])


if __name__ == "__main__":
    main()
