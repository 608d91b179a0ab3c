"""The expand-ratio / steep-gate report renders every measured row (the sweep itself needs a GPU: make bench)."""

from __future__ import annotations

from hgrn.bench.expand_ratio import markdown


def test_markdown_has_every_row_and_the_steep_gate_ratio():
    result = {
        "device": "GPU X",
        "date": "2026-12-02",
        "command": "python -m hgrn.bench.expand_ratio",
        "rows": [
            {"case": "hgrn1 real scan [B, T, d]", "ratio": None, "fwd_ms": 0.08, "fwd_bwd_ms": 0.5},
            {"case": "ours (hgrn.ops)", "ratio": 1, "fwd_ms": 1.9, "fwd_bwd_ms": 4.6},
            {"case": "chunk kernels forced", "ratio": 1, "fwd_ms": 6.6, "fwd_bwd_ms": 34.6},
        ],
        "steep_gates": [
            {"gates": "random", "mean_log_f": -0.81, "fwd_ms": 0.24, "fwd_bwd_ms": 1.0},
            {"gates": "shift -8", "mean_log_f": -8.0, "fwd_ms": 1.5, "fwd_bwd_ms": 5.05},
        ],
    }
    text = markdown(result)
    assert "GPU X, 2026-12-02" in text
    assert "| hgrn1 real scan [B, T, d] | - | 0.080 | 0.500 |" in text
    assert "| chunk kernels forced | 1 | 6.600 | 34.600 |" in text
    assert "| shift -8 | -8.00 | 1.500 | 5.050 | 5.05x |" in text
    assert "paths split" not in text  # a run that timed the rule only


def test_markdown_has_the_split_steep_table_when_timed():
    steep = [
        {"gates": "random", "mean_log_f": -0.81, "fwd_ms": 0.24, "fwd_bwd_ms": 1.0, "split_fwd_ms": 0.2,
         "split_fwd_bwd_ms": 0.8},
        {"gates": "shift -8", "mean_log_f": -8.0, "fwd_ms": 0.3, "fwd_bwd_ms": 1.2, "split_fwd_ms": 0.3,
         "split_fwd_bwd_ms": 1.2},
    ]  # fmt: skip
    result = {"device": "GPU X", "date": "2026-12-05", "command": "c", "rows": [], "steep_gates": steep,
              "split_tiles": "SPLIT=1,SCAN=1"}  # fmt: skip
    text = markdown(result)
    assert "paths split (SPLIT=1,SCAN=1):" in text
    assert "| shift -8 | -8.00 | 0.300 | 1.200 | 1.20x |" in text  # the rule, against its random gates
    assert "| shift -8 | 0.300 | 1.200 | 1.50x |" in text  # split, against its own random gates
