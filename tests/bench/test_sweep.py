"""The tile sweep's routing (its timings need a GPU)."""

from __future__ import annotations

from hgrn.bench.sweep import _env


def test_each_op_reads_the_tile_variable_of_the_kernels_it_runs():
    assert _env("hgrn2", (8, 2048, 16, 128)) == "HGRN_CHUNK_TILES"
    assert _env("hgrn2", (8, 2048, 256, 8)) == "HGRN_SMALL_TILES"
    assert _env("hgrn2", (8, 2048, 2048, 1)) == "HGRN_SCAN_TILES"  # head size 1 runs the HGRN1 scan's kernels
    assert _env("hgrn2-2d", (256, 256, 48, 8)) == "HGRN_SMALL_TILES"
    assert _env("hgrn1", (8, 2048, 4)) == "HGRN_SCAN_TILES"  # few channels are still the scan's
    assert _env("hgrn1-complex", (256, 256, 384)) == "HGRN_SCAN_TILES"
