"""The expand-ratio / steep-gate report renders every measured row (the sweep itself needs a GPU: make bench)."""

from __future__ import annotations

from hgrn.bench.expand_ratio import CANDIDATES, STEEP_RATIOS, markdown


def _steep(ratio: int, tiles: str, random_ms: float, shifted_ms: float) -> list[dict]:
    timed = [("random", -0.81, random_ms), ("shift -8", -8.0, shifted_ms)]
    return [
        {"ratio": ratio, "tiles": tiles, "gates": gates, "mean_log_f": log_f, "fwd_ms": 0.3, "fwd_bwd_ms": ms,
         "fwd_graph_ms": ms / 4, "fwd_bwd_graph_ms": ms, "fwd_bwd_kernels_ms": ms / 2}
        for gates, log_f, ms in timed
    ]  # fmt: skip


def test_markdown_has_every_row_and_each_series_against_its_own_random_gates():
    rows = [
        {"case": "hgrn1 real scan [B, T, d]", "ratio": None, "fwd_ms": 0.08, "fwd_bwd_ms": 0.5,
         "fwd_bwd_kernels_ms": 0.4, "fwd_graph_ms": 0.07, "fwd_bwd_graph_ms": 0.3},
        {"case": "ours (hgrn.ops)", "ratio": 1, "fwd_ms": 1.9, "fwd_bwd_ms": 4.6, "fwd_bwd_kernels_ms": 4.2},
        {"case": "chunk kernels forced", "ratio": 1, "fwd_ms": 6.6, "fwd_bwd_ms": 34.6},
    ]  # fmt: skip
    steep = _steep(16, "rule", 2.0, 3.0) + _steep(16, "pwarps=2", 1.6, 4.0) + _steep(128, "rule", 1.0, 5.05)
    del steep[-1]["fwd_graph_ms"]  # its capture failed
    result = {"device": "GPU X", "date": "2026-12-02", "command": "c", "rows": rows, "steep_gates": steep}
    text = markdown(result)
    assert "GPU X, 2026-12-02" in text
    assert "| hgrn1 real scan [B, T, d] | - | 0.080 | 0.500 | 0.400 | 0.070 | 0.300 |" in text
    assert "| ours (hgrn.ops) | 1 | 1.900 | 4.600 | 4.200 | - | - |" in text  # no graph replay (capture failed)
    assert "| chunk kernels forced | 1 | 6.600 | 34.600 | - | - | - |" in text  # a row timed without its kernels
    assert "| 16 | rule | shift -8 | -8.00 | 0.750 | 1.50x | 3.000 | 1.50x | 1.500 | 1.50x |" in text
    assert "| 16 | pwarps=2 | shift -8 | -8.00 | 1.000 | 2.50x | 4.000 | 2.50x | 2.000 | 2.50x |" in text  # own random
    assert "| 128 | rule | shift -8 | -8.00 | - | - | 5.050 | 5.05x | 2.525 | 5.05x |" in text


def test_every_candidate_is_timed_under_steep_gates():
    assert set(CANDIDATES) <= set(STEEP_RATIOS)
    assert all(isinstance(tiles, tuple) and tiles for tiles in CANDIDATES.values())
