"""The ImageNet step benchmark runs (CPU smoke: tiny models, 28-pixel images) and writes its JSON and Markdown."""

from __future__ import annotations

import json

from hgrn.bench import vit_step


def test_vit_step_smoke_writes_the_table(tmp_path, capsys):
    vit_step.main(["--smoke", "--profile", "--compile", "false", "--out", str(tmp_path)])
    [written] = list(tmp_path.glob("vit-step-tiny-false-*.json"))  # named by model size and --compile: runs all kept
    result = json.loads(written.read_text())
    assert [row["model"] for row in result["rows"]] == ["hgrn2-tiny", "hgrn1-tiny", "deit-tiny"]
    assert all(row["images_per_s"] > 0 and row["image_size"] == 28 for row in result["rows"])
    assert result["rows"][2]["speed_vs_deit"] == 1.0
    assert all(row["compile"] == "false" for row in result["rows"]) and "task.compile=false" in result["setting"]
    table = written.with_suffix(".md").read_text()
    assert "| hgrn2-tiny |" in table and "GPU hours" in table
    assert all("| kernel | group | calls/step |" in row["profile"] for row in result["rows"])
    assert "Where a hgrn2-tiny step's GPU time goes" in table


def test_the_gpu_run_measures_the_recipes_compile_unless_told():
    """Without --compile a model is built as its experiment trains it (the ImageNet recipe: blocks as CUDA graphs)."""
    assert vit_step.build("hgrn2-tiny", smoke=False).hparams["compile"] == "graphs"
    assert vit_step.build("hgrn2-tiny", smoke=False, compile="false").hparams["compile"] is False
