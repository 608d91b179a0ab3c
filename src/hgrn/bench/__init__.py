"""Kernel benchmarks (python -m hgrn.bench): our Triton ops against fla, SDPA attention and the PyTorch reference.

shapes.py the default shapes, roofline.py the floors (bytes and FLOPs), cases.py what is timed, runner.py the timing
on the GPU, report.py the JSON / Markdown / plot written to results/bench/; sweep.py times tile choices of the kernels
(python -m hgrn.bench.sweep), lra_steps.py the GPU hours of each LRA recipe.
"""
