"""The benchmark's pure-Python parts: roofline arithmetic and the report written from a (fake) result."""

from __future__ import annotations

import json

import pytest

from hgrn.bench import report
from hgrn.bench.__main__ import parse_args
from hgrn.bench.roofline import Shape, achieved, floor_ms, min_bytes, min_flops


def test_roofline_numbers_match_the_reference_arithmetic():
    s = Shape(8, 4096, 16, 128)
    tensor = 8 * 4096 * 16 * 128 * 2  # one bf16 [B, T, H, D] tensor: 134.2 MB (kernels-and-roofline.md §5)
    assert tensor == 134_217_728
    assert min_bytes("gla", s, "fwd") == 5 * tensor  # q, k, v, g read; o written: 671 MB
    assert min_bytes("hgrn2", s, "fwd") == 4 * tensor  # k is formed in the kernel: 537 MB
    assert min_bytes("hgrn1", Shape(8, 4096, 1, 2048), "fwd") == 3 * tensor
    assert min_flops("hgrn2", s, "fwd") == pytest.approx(8 * 16 * (4 * 4096 * 128 * 128 + 4096 * 64 * 256))
    assert min_flops("hgrn2", s, "fwd+bwd") == 3 * min_flops("hgrn2", s, "fwd")
    assert floor_ms(5 * tensor, 46.2e9, 3.0, 800.0) == pytest.approx(0.2237, rel=1e-3)  # memory-bound: 224 us
    tbs, tflops = achieved(1e12, 2e12, 1000.0)
    assert (tbs, tflops) == (pytest.approx(1.0), pytest.approx(2.0))


def fake_result() -> dict:
    rows = []
    for impl, scale in (("ours", 1.0), ("fla chunk_gla", 3.0)):
        for mode, ms in (("fwd", 0.2), ("fwd+bwd", 0.8)):
            rows.append({"impl": impl, "group": "hgrn2", "op": "hgrn2", "shape": "B8 T2048 H16 D128",
                         "shape_dims": {"B": 8, "T": 2048, "H": 16, "D": 128}, "mode": mode, "ms": ms * scale,
                         "peak_mib": 100.0, "first_call_s": 3.0, "tbs": 1.0, "floor_ms": 0.1})  # fmt: skip
    rows.append({"impl": "ours HGRN2Mixer", "group": "layer-hgrn2", "op": None, "shape": "B8 T2048 H16 D128",
                 "shape_dims": {"B": 8, "T": 2048, "H": 16, "D": 128}, "mode": "fwd", "ms": 1.0})  # fmt: skip
    rows.append({"impl": "fla chunk_hgrn", "group": "hgrn1", "op": "hgrn1", "shape": "B8 T2048 D2048",
                 "shape_dims": {"B": 8, "T": 2048, "H": 1, "D": 2048}, "mode": "fwd", "error": "boom"})  # fmt: skip
    return {"gpu": "NVIDIA Test GPU", "date": "2026-01-02", "versions": {"torch": "x", "triton": "y", "fla": "z"},
            "ceilings": {"copy_tbs": 4.0, "matmul_tflops": 700.0}, "rows": rows, "notes": ["a note"]}  # fmt: skip


def test_report_writes_json_markdown_with_speedups(tmp_path):
    result = fake_result()
    assert report.speedups(result)[("hgrn2", "B8 T2048 H16 D128")] == pytest.approx({"fwd": 3.0, "fwd+bwd": 3.0})
    paths = report.write(result, tmp_path)
    assert paths[0].name == "nvidia-test-gpu-2026-01-02.json"
    assert json.loads(paths[0].read_text())["rows"] == result["rows"]
    text = paths[1].read_text()
    assert "NVIDIA Test GPU" in text and "fwd 3.00x" in text and "| ours | 0.200 | 0.800 |" in text
    assert "- a note" in text


def test_report_shows_graph_times_and_the_run_of_each_merged_group():
    result = fake_result()
    for row in result["rows"]:
        if row["impl"] == "ours":
            row.update(run="2026-01-02T10:00:00Z", graph_ms=row["ms"] / 2, graph_tbs=2.0)
        else:
            row["run"] = "2025-12-30T10:00:00Z"
    result["runs"] = {"2025-12-30T10:00:00Z": {}, "2026-01-02T10:00:00Z": {}}
    text = report.markdown(result)
    assert "| ours | 0.200 | 0.800 | 100 | 3.0 / 3.0 | 1.00 | 50% | 0.100 / 0.400 | 2.00 |" in text
    assert "| fla chunk_gla | 0.600 | 2.400 | 100 | 3.0 / 3.0 | 1.00 | 17% | - / - | - |" in text
    assert "fwd+bwd 3.00x, measured 2025-12-30, 2026-01-02)" in text
    assert "## layer-hgrn2 B8 T2048 H16 D128 (measured 2025-12-30)" in text


def test_layer_speedup_compares_like_with_like():
    """fla's HGRN1 layer is real-valued, so the real variant of ours is the one compared when it was measured."""
    rows = [
        {"impl": impl, "group": "layer-hgrn1", "shape": "B8 T2048 H16 D128", "mode": "fwd", "ms": ms}
        for impl, ms in (("ours HGRN1Mixer", 2.0), ("ours HGRN1Mixer (real)", 0.5), ("fla HGRNAttention", 1.0))
    ]
    assert report.speedups({"rows": rows})[("layer-hgrn1", "B8 T2048 H16 D128")] == {"fwd": 2.0}
    assert report.speedups({"rows": rows[:1] + rows[2:]})[("layer-hgrn1", "B8 T2048 H16 D128")] == {"fwd": 0.5}


def test_cli_defaults_cover_the_issue_shapes():
    args = parse_args([])
    assert args.hgrn2 == ["8x2048x16x128", "4x8192x16x128", "1x32768x16x128", "8x2048x32x64", "8x2048x8x256"]
    assert args.hgrn1 == ["8x2048x2048", "4x8192x2048"]
    assert str(args.out) == "results/bench"


def test_a_second_run_of_the_day_keeps_the_first_runs_files(tmp_path):
    result = report.dated_record("demo", "python -m demo", rows=[1])
    for text in ("first", "second", "third"):
        report.write_dated(result, text, tmp_path, "demo")
    base = report.dated_base(result, tmp_path, "demo")
    written = [base.with_name(base.name + suffix).with_suffix(".md") for suffix in ("", "-2", "-3")]
    assert [path.read_text() for path in written] == ["first", "second", "third"]
    report.write_dated(result, "merged", tmp_path, "demo", replace=True)  # a benchmark that merged the day's rows
    assert written[0].read_text() == "merged" and len(list(tmp_path.glob("*.md"))) == 3


def test_a_days_second_kernel_run_keeps_the_rows_it_did_not_measure_again(tmp_path):
    from hgrn.bench.runner import with_earlier_rows

    first = {**fake_result(), "runs": {"first": {}}}
    (path, *_) = report.write(first, tmp_path)
    again = {**first["rows"][0], "ms": 0.1, "run": "second"}
    second = {**first, "rows": [again], "runs": {"second": {}}, "notes": ["a note", "another"]}
    merged = with_earlier_rows(second, path)
    assert merged["rows"] == [r for r in first["rows"] if r["impl"] != "ours"] + [again]  # a case: both modes
    assert list(merged["runs"]) == ["first", "second"] and merged["notes"] == ["a note", "another"]
    assert with_earlier_rows(second, tmp_path / "none.json") == second
    with pytest.raises(SystemExit, match="this run is on"):
        with_earlier_rows({**second, "gpu": "another GPU"}, path)
