"""The 2-D mixer benchmark runs (CPU smoke: tiny HGRN2 ViT and LRA Image mixers) and writes its JSON and Markdown;
the peer columns render from a row that has them."""

from __future__ import annotations

import json

from hgrn.bench import grid_layers


def test_grid_layers_smoke_writes_the_table(tmp_path):
    grid_layers.main(["--smoke", "--out", str(tmp_path)])
    [written] = list(tmp_path.glob("grid-layers-*.json"))
    result = json.loads(written.read_text())
    assert [row["case"] for row in result["rows"]] == ["vit-hgrn2-tiny", "vit-hgrn1-tiny", "lra-image"]
    assert [row["direction"] for row in result["rows"]] == ["2d", "bidirectional", "2d"]
    assert all(row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0 for row in result["rows"])  # (CPU timings: no order)
    assert [row["T"] for row in result["rows"]] == [49, 49, 1024]  # 28-pixel images in 4-pixel patches; CIFAR's
    assert "| vit-hgrn2-tiny | 2d | 2 x 49 x 16 |" in written.with_suffix(".md").read_text()


def test_the_peer_columns():
    row = {"case": "vit-hgrn2-tiny", "direction": "2d", "B": 256, "T": 256, "d": 192, "fwd_ms": 1.0,
           "fwd_bwd_ms": 3.0, "peer": "deit_tiny_patch16_224 attention", "peer_T": 197, "peer_fwd_ms": 0.5,
           "peer_fwd_bwd_ms": 1.5}  # fmt: skip
    table = grid_layers.markdown({"device": "GPU", "date": "2026-12-02", "command": "c", "setting": "s", "rows": [row]})
    assert "| deit_tiny_patch16_224 attention (T 197) | 0.500 / 1.500 | 2.00x |" in table
