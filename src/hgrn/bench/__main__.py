"""python -m hgrn.bench: operator and layer benchmarks on the GPU -> results/bench/<gpu>-<date>.{json,md,png}, then
the HGRN2 op's expand-ratio and steep-gate sweeps (hgrn.bench.expand_ratio) -> results/bench/expand-ratio-*,
the 2-D mixers at the ViT and LRA grid shapes (hgrn.bench.grid_layers) -> results/bench/grid-layers-*,
and the LM training step against Llama and fla (hgrn.bench.lm_step) -> results/bench/lm-step-<gpu>-<date>.{json,md};
with --trained-gates CKPT also the op at that HGRN2 LM's own gates (hgrn.bench.trained_gates).

Every number comes from this process: ours, fla (when installed), SDPA and the PyTorch reference on the same GPU.
The Triton cache starts empty (unless --cache-dir is given), so first-call times include compilation and tuning.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hgrn.bench.shapes import HGRN1_SHAPES, HGRN2_SHAPES, MAIN_HGRN2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hgrn.bench", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument("--hgrn2", nargs="*", default=HGRN2_SHAPES, help="BxTxHxD shapes (empty: none)")
    p.add_argument("--hgrn1", nargs="*", default=HGRN1_SHAPES, help="BxTxD shapes (empty: none)")
    p.add_argument("--layer", nargs="*", default=[MAIN_HGRN2], help="BxTxHxD: d_model = H*D (empty: none)")
    p.add_argument("--no-fla", action="store_true", help="skip fla even if it is installed")
    p.add_argument("--cache-dir", help="reuse this Triton cache (first-call times then exclude compilation)")
    p.add_argument(
        "--merge",
        type=Path,
        help="add these rows to an earlier result JSON of the same GPU (default: "
        "the day's file of this GPU under --out, if there is one; rows measured again replace theirs)",
    )
    p.add_argument("--no-sweeps", action="store_true", help="skip the expand-ratio and steep-gate sweeps")
    p.add_argument("--no-grid", action="store_true", help="skip the 2-D mixers (hgrn.bench.grid_layers)")
    p.add_argument("--no-lm-step", action="store_true", help="skip the LM training-step benchmark (hgrn.bench.lm_step)")
    p.add_argument("--trained-gates", type=Path, help="an HGRN2 LM checkpoint: time the op at its gates")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["TRITON_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="hgrn-bench-triton-")
    from hgrn.bench.runner import run

    started = time.time()
    result = run(args)
    result["notes"].append(f"run took {time.time() - started:.0f} s")
    from hgrn.bench.report import write

    for path in write(result, args.out):
        print("wrote", path)
    (args.out / "rows-partial.json").unlink(missing_ok=True)
    if not args.no_sweeps:
        from hgrn.bench import expand_ratio

        expand_ratio.main(["--out", str(args.out)])
    if not args.no_grid:
        from hgrn.bench import grid_layers

        grid_layers.main(["--out", str(args.out)])
    if not args.no_lm_step:
        from hgrn.bench import lm_step

        lm_step.main(["--out", str(args.out), *(["--no-fla"] if args.no_fla else [])])
    if args.trained_gates is not None:
        from hgrn.bench import trained_gates

        trained_gates.main([str(args.trained_gates), "--out", str(args.out)])


if __name__ == "__main__":
    main()
