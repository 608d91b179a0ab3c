"""The LM step benchmark: a CPU smoke run of our models writes the JSON and Markdown, every path through the model
gives the same first loss, ratios and MFU are computed against the peers, kernels fall into their groups."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict

import pytest
import torch

from hgrn.bench import lm_step
from hgrn.bench import lm_step_report as report
from hgrn.bench.step_profile import group_of


def test_smoke_run_writes_results_and_the_loss_paths_agree(tmp_path):
    rows = ["ours-hgrn2-before", "ours-hgrn2-fused-eager", "ours-hgrn2", "ours-attention"]
    lm_step.main(["--smoke", "--out", str(tmp_path), "--rows", *rows])
    (json_path,) = tmp_path.glob("lm-step-cpu-*.json")
    result = json.loads(json_path.read_text())
    by_row = {row["row"]: row for row in result["rows"]}
    assert list(by_row) == rows
    assert all(row["tokens_per_s"] > 0 and row["first_step_s"] > 0 for row in by_row.values())
    for row in by_row.values():  # the first step, phase by phase, adds up to its total
        assert list(row["first_step_s_by_phase"]) == ["forward+loss", "backward", "optimizer"]
        assert sum(row["first_step_s_by_phase"].values()) == pytest.approx(row["first_step_s"])
    # the unfused logits path and the chunked loss see the same model (same seed) and the same tokens
    first = by_row["ours-hgrn2-before"]["loss_first"]
    assert by_row["ours-hgrn2-fused-eager"]["loss_first"] == pytest.approx(first, rel=1e-6)
    assert by_row["ours-hgrn2"]["loss_first"] == pytest.approx(first, rel=1e-6)
    assert by_row["ours-hgrn2"]["params"] == by_row["ours-hgrn2-before"]["params"]
    markdown = json_path.with_suffix(".md").read_text()
    assert "| ours-attention |" in markdown and "fp32, eager (CPU smoke)" in markdown
    assert "- ours-attention: first step, seconds by phase: forward+loss " in markdown


def test_ratios_and_mfu_are_taken_against_the_peers_of_the_same_run():
    """A second run merged into the first: each row's MFU uses its run's matmul rate, ratios its run's peers."""

    def measured(row: str, tokens_per_s: float) -> dict:
        return {"row": row, "note": "", "params": 341_000_000, "tokens_per_s": tokens_per_s, "peak_gib": 20.0,
                "first_step_s": 5.0, "loss_first": 10.4}  # fmt: skip

    shape = asdict(lm_step.ANCHOR)
    first_rows = [measured("ours-hgrn2", 150e3), measured("llama-sdpa", 100e3)]
    first = report.assemble(first_rows, shape, "NVIDIA H200", "2026-12-02T10:00:00Z", 700.0, "s", None)
    second_rows = [measured("ours-hgrn2", 180e3), measured("llama-sdpa", 90e3)]
    second_rows.append({"row": "fla-hgrn2", "note": "", "error": "not finished within 200 s"})
    merged = report.assemble(second_rows, shape, "NVIDIA H200", "2026-12-02T12:00:00Z", 800.0, "s", first)
    assert [(r["row"], r["run"][11:13]) for r in merged["rows"]] == [
        ("ours-hgrn2", "10"), ("llama-sdpa", "10"), ("ours-hgrn2", "12"), ("llama-sdpa", "12"), ("fla-hgrn2", "12")
    ]  # fmt: skip
    assert merged["rows"][0]["mfu"] == pytest.approx(6 * 341e6 * 150e3 / 700e12)
    assert merged["rows"][2]["mfu"] == pytest.approx(6 * 341e6 * 180e3 / 800e12)
    table = report.markdown(merged).splitlines()
    ours = [line for line in table if line.startswith("| ours-hgrn2 |")]
    assert "| 150.0k | 1.50 | - |" in ours[0] and "| 180.0k | 2.00 | - |" in ours[1]  # fla gave no number
    assert any("error: not finished within 200 s" in line for line in table)
    assert report.stem(merged) == "lm-step-nvidia-h200-2026-12-02"
    with pytest.raises(SystemExit, match="merge same GPUs"):
        report.assemble(second_rows, shape, "NVIDIA H100", "2026-12-02T12:00:00Z", 800.0, "s", first)
    late = [{**measured("ours-hgrn2-graphs", 1e5), "kernels_ahead": False}, measured("ours-hgrn2-blocks", 1e5)]
    late[1]["loss_kernel"] = False
    table = report.markdown(report.assemble(late, shape, "NVIDIA H200", "2026-12-02T13:00:00Z", 800.0, "s", None))
    ours = [line for line in table.splitlines() if line.startswith("| ours")]
    assert [line.count("HGRN_PRECOMPILE=0") for line in ours] == [1, 0]
    assert [line.count("through torch.compile, not our Triton kernel") for line in ours] == [0, 1]


@pytest.mark.parametrize("argv", [["--rows", "llama-sdpa"], ["--merge", "no-such-result.json"]])
def test_bad_arguments_stop_before_anything_runs(argv, capsys):
    with pytest.raises(SystemExit):
        lm_step.parse_args(["--smoke", *argv])
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kernel", "group"),
    [
        ("triton_red_fused__to_copy_mul_rsqrt_0", "compiled (Inductor Triton)"),
        ("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "matmul (cuBLAS / CUTLASS)"),
        ("walk_fwd_kernel", "recurrence ops (Triton: ours, fla's)"),
        ("_bwd_kernel", "recurrence ops (Triton: ours, fla's)"),
        ("chunk_gla_fwd_kernel_o", "recurrence ops (Triton: ours, fla's)"),
        ("layer_norm_fwd_kernel", "norms"),
        ("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernelTemplate<float, float, ", "norms"),
        ("void at::native::(anonymous namespace)::sum_and_scatter<float, long>", "embedding (eager backward)"),
        ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>", "attention (SDPA / flash)"),
        ("void at::native::(anonymous namespace)::fused_adam_kernel", "optimizer (fused AdamW)"),
        ("something_else", "other"),
    ],
)
def test_profile_groups_kernels_by_name(kernel, group):
    assert group_of(kernel) == group


def test_profile_groups_every_kernel_of_ours_by_what_it_does():
    """Each kernel hgrn.ops.triton declares is grouped as a recurrence op (the loss kernel as the loss), so a renamed
    or new kernel cannot fall into "other" unnoticed (the small-head scan's once did)."""
    import hgrn.ops.triton.chunk
    import hgrn.ops.triton.cross_entropy
    import hgrn.ops.triton.hgrn1_scan
    import hgrn.ops.triton.small_head  # noqa: F401 (with its scan and parallel form)
    from hgrn.ops.triton.precompile import ENTRIES

    names = {entry.fn.__name__ for entry in ENTRIES}
    assert len(names) >= 17
    for name in names:
        loss = "cross_entropy" in name
        assert group_of(name) == ("loss (softmax / cross-entropy)" if loss else "recurrence ops (Triton: ours, fla's)")


def test_a_rows_process_keeps_autotuning_in_its_own_caches_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_CACHE_AUTOTUNING", raising=False)
    env = lm_step.row_environment(tmp_path / "fla-hgrn2")
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / "fla-hgrn2" / "triton")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "fla-hgrn2" / "inductor")
    assert env["TRITON_CACHE_AUTOTUNING"] == "1"
    monkeypatch.setenv("TRITON_CACHE_AUTOTUNING", "0")
    assert lm_step.row_environment(tmp_path)["TRITON_CACHE_AUTOTUNING"] == "0"


def test_a_row_runs_in_its_own_process_with_its_own_caches(tmp_path):
    args = lm_step.parse_args(["--smoke", "--steps", "1", "--warmup", "0", "--cache-root", str(tmp_path)])
    row = lm_step.run_row_process("ours-hgrn2-fused-eager", args, timeout=120)
    assert "error" not in row, row.get("error")
    assert row["tokens_per_s"] > 0 and row["process_s"] >= row["first_step_s"]
    assert (tmp_path / "ours-hgrn2-fused-eager" / "row.json").exists() and row["warm_cache"] is False
    kept = tmp_path / "ours-hgrn2-fused-eager" / "triton" / "abc" / "kernel.cubin"  # as a restored cache would hold
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"0")
    again = lm_step.run_row_process("ours-hgrn2-fused-eager", args, timeout=120)
    assert again["warm_cache"] is True
    result = report.assemble([again], asdict(lm_step.SMOKE), "cpu", "2026-12-04T16:00:00Z", None, "", None)
    assert "the first step is not cold" in report.markdown(result)
    late = lm_step.run_row_process("ours-hgrn2", args, timeout=0.01)
    assert late == {"row": "ours-hgrn2", "note": lm_step.ROW_NOTES["ours-hgrn2"], "error": "not finished within 0 s"}


def test_a_first_steps_compilation_is_split_into_triton_jit_by_kernel_and_torch_compile_phases():
    """Kernels Triton compiles in the block count by name (cache hits do not), any listener installed before keeps
    hearing of them and is back afterwards; TorchDynamo's timed phases of a compile inside the block are reported."""
    from triton import knobs
    from triton.knobs import CompileTimes

    heard = []

    def before(**event: object) -> None:
        heard.append(event["cache_hit"])

    knobs.compilation.listener = before
    try:
        with lm_step.compile_seconds() as found:
            for name, cache_hit in (("walk_fwd_kernel", False), ("walk_fwd_kernel", False), ("_prep", True)):
                times = CompileTimes(ir_initialization=500_000, lowering_stages=[("ptx", 1_000_000)], store_results=0)
                knobs.compilation.listener(src=type("Src", (), {"name": name})(), metadata={}, metadata_group={},
                                           times=times, cache_hit=cache_hit)  # fmt: skip
            torch.compile(lambda x: x.sin() + 1, backend="eager")(torch.randn(3))
        assert heard == [False, False, True]
    finally:
        restored = knobs.compilation.listener
        knobs.compilation.listener = None
    assert found["triton_jit"] == {"walk_fwd_kernel": pytest.approx(3.0)}
    assert found["torch_compile"] and all(seconds > 0 for seconds in found["torch_compile"].values())
    assert "_compile.compile_inner" in found["torch_compile"] and restored is before
    line, by_thread = report._row_details({"row": "ours-hgrn2", "first_step_compile_s": found})
    assert by_thread.endswith(f"by thread: {threading.current_thread().name} 3.0")
    assert "Triton JIT in the process, summed over kernels 3.0 (walk_fwd_kernel 3.0); torch.compile" in line


def test_the_compile_split_tells_kernels_compiled_ahead_from_those_a_launch_waited_for_and_why():
    """One of our kernels compiled on precompile's compile threads counts as ahead; one compiled on the launching
    thread too, with other specialisations, is named with the arguments whose specialisation differed. Another
    module's kernels (Inductor's) are never compiled ahead, so never listed."""
    from triton import knobs
    from triton.knobs import CompileTimes

    from hgrn.ops.triton.precompile import COMPILE_THREAD_NAME

    def compiled(name: str, attrs: dict, module: str = "hgrn.ops.triton.chunk") -> None:
        fn = type("Fn", (), {"arg_names": ["x", "y", "T"], "module": module})()
        src = type("Src", (), {"name": name, "fn": fn, "constants": {(2,): 1}, "attrs": attrs})()
        times = CompileTimes(ir_initialization=0, lowering_stages=[("ptx", 2_000_000)], store_results=0)
        knobs.compilation.listener(src=src, metadata={}, metadata_group={}, times=times, cache_hit=False)

    unaligned = {(0,): [["tt.divisibility", 16]]}
    aligned = {**unaligned, (1,): [["tt.divisibility", 16]]}
    with lm_step.compile_seconds() as found:
        ahead = threading.Thread(
            name=f"{COMPILE_THREAD_NAME}_0", target=lambda: [compiled("_a", aligned), compiled("_b", aligned)]
        )
        ahead.start()
        ahead.join()
        compiled("_b", unaligned)
        compiled("triton_poi_fused_0", aligned, module="torch._inductor.codecache")
    assert found["triton_jit"] == pytest.approx({"_b": 4.0, "_a": 2.0, "triton_poi_fused_0": 2.0})
    assert found["at_launch"] == {"_b": pytest.approx(2.0)}
    assert found["differs"] == {"_b": "at launch -, ahead [\"y=[['tt.divisibility', 16]]\"]"}
    assert found["by_thread"] == pytest.approx({COMPILE_THREAD_NAME: 4.0, threading.current_thread().name: 4.0})
    lines = report._row_details({"row": "ours-hgrn2", "first_step_compile_s": found})
    assert lines[1].startswith("- ours-hgrn2: Triton JIT seconds by thread: ")
    assert lines[2] == "- ours-hgrn2: compiled at their launch, not ahead (the launch waited), seconds: _b 2.0"
    assert lines[-1].startswith("- ours-hgrn2: _b compiled both ways; specialised differently: at launch -, ahead [")


def test_the_compile_split_says_when_inductors_compile_workers_answered(monkeypatch):
    """The pool's readiness probe answered within the block: its seconds into it; answered before: 0.0; not yet:
    None, which the report says; no probe sent: nothing recorded."""
    from concurrent.futures import Future

    from torch._inductor.async_compile import AsyncCompile

    def ready_within(answer: bool, done_before: bool = False) -> dict:
        probe: Future = Future()
        if done_before:
            probe.set_result(True)
        monkeypatch.setattr(AsyncCompile, "_ready_future", probe)
        with lm_step.compile_seconds() as found:
            time.sleep(0.05)
            if answer and not done_before:
                probe.set_result(True)
        return found

    assert ready_within(True)["pool_ready_s"] == pytest.approx(0.05, abs=0.04)
    assert ready_within(True, done_before=True)["pool_ready_s"] == 0.0
    late = ready_within(False)
    assert late["pool_ready_s"] is None
    assert "compile workers answered not within the step" in "\n".join(
        report._row_details({"row": "ours-hgrn2", "first_step_compile_s": late})
    )
    monkeypatch.setattr(AsyncCompile, "_ready_future", None)
    with lm_step.compile_seconds() as found:
        pass
    assert "pool_ready_s" not in found


def test_each_timed_step_is_kept_and_the_report_gives_their_spread(monkeypatch):
    """Every step's seconds, in order, adding up to the total (on a clock the steps advance: a loaded machine's real
    sleeps overran the tolerance); the report gives min, median, max and the order."""
    clock = [100.0]
    monkeypatch.setattr(lm_step.time, "perf_counter", lambda: clock[0])
    pauses = iter([0.01, 0.05, 0.03])
    each: list[float] = []

    def step() -> None:
        clock[0] += next(pauses)

    total = lm_step._timed(step, 3, cuda=False, each=each)
    assert each == pytest.approx([0.01, 0.05, 0.03]) and total == pytest.approx(0.09)
    lines = report._row_details({"row": "fla-hgrn2", "step_ms_each": [150.0, 190.5, 160.0]})
    assert lines == ["- fla-hgrn2: the 3 timed steps, ms each: min 150.0, median 160.0, max 190.5; "
                     "in order [150.0, 190.5, 160.0]"]  # fmt: skip
    (even,) = report._row_details({"row": "ours", "step_ms_each": [90.0, 96.0, 91.0, 100.0]})
    assert "min 90.0, median 93.5, max 100.0" in even  # the mean of the middle two


def test_a_later_run_of_the_day_adds_its_rows_to_the_days_file(tmp_path, monkeypatch):
    run_ids = iter(["2026-12-05T10:00:00Z", "2026-12-05T11:00:00Z"])
    monkeypatch.setattr(report, "new_run_id", lambda: next(run_ids))
    for row in ("ours-hgrn2", "ours-attention"):
        lm_step.main(["--smoke", "--out", str(tmp_path), "--rows", row, "--steps", "1", "--warmup", "0"])
    (json_path,) = tmp_path.glob("lm-step-cpu-*.json")
    result = json.loads(json_path.read_text())
    assert [row["row"] for row in result["rows"]] == ["ours-hgrn2", "ours-attention"]
    assert [row["run"] for row in result["rows"]] == list(result["runs"]) == ["2026-12-05T10:00:00Z",
                                                                               "2026-12-05T11:00:00Z"]  # fmt: skip
