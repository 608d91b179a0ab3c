"""`python -m hgrn.eval.lm`: one evaluation record (hgrn.results) with the perplexities of a split and the lm-eval
metrics, flat keys, written atomically; options that change the protocol recorded as overrides; the token stream
from a file or from the run's own datamodule; one-line errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hgrn.eval.checkpoint import load_causal_lm
from hgrn.eval.lm import evaluate_lm, flat_lm_eval_metrics, main
from hgrn.eval.perplexity import perplexity
from hgrn.eval.streams import file_tokens
from hgrn.results import load_record
from tests.eval.conftest import BLOCK

TEXT = "The committee met on Tuesday to discuss the budget, and after a long debate it agreed to the plan. " * 3


class StreamData:
    """A stand-in for the LM datamodule: `tokens(split)` is all the evaluation asks of it."""

    def __init__(self, length: int) -> None:
        self.length = length

    def tokens(self, split: str) -> np.ndarray:
        offset = {"valid": 0, "test": 7}[split]
        return (np.arange(self.length, dtype=np.uint16) * 31 + offset) % 50000


def test_record_holds_perplexities_and_lm_eval_metrics(lm_checkpoint, loaded_lm, on_eval_data, tmp_path):
    text, out = tmp_path / "split.txt", tmp_path / "record.json"
    text.write_text(TEXT, encoding="utf-8")
    tasks = "piqa,arc_easy,lambada_openai"
    options = {"--data": text, "--stride": 8, "--tasks": tasks, "--limit": 2, "--out": out, "--device": "cpu"}
    main(["--ckpt", str(lm_checkpoint), *(str(part) for pair in options.items() for part in pair)])
    record = load_record(out)
    tokens = file_tokens(text)
    metrics = record.metrics
    assert metrics["test/ppl"] == pytest.approx(perplexity(loaded_lm.model, tokens, BLOCK).ppl)
    assert metrics["test/ppl_sliding_8"] == pytest.approx(perplexity(loaded_lm.model, tokens, BLOCK, 8).ppl)
    assert record.extra["perplexity"]["sliding_8"]["tokens"] == len(tokens) - 1
    for key in ("piqa/acc", "piqa/acc_norm", "arc_easy/acc", "arc_easy/acc_norm", "lambada_openai/perplexity"):
        assert key in metrics
    assert 0 <= metrics["piqa/acc"] <= 1 and metrics["lambada_openai/perplexity"] > 1
    assert record.evaluation == "lm" and record.checkpoint == str(lm_checkpoint.resolve())
    assert record.overrides == ["limit=2", f"data={text}", "stride=8"] and not record.recipe
    assert record.extra["tasks"] == tasks.split(",") and "commit" in record.git
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left


def test_the_runs_own_data_is_read_through_its_saved_config(lm_checkpoint, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = Path(shutil.copy(lm_checkpoint, run / "checkpoints" / "best.ckpt"))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("data:\n  _target_: tests.eval.test_lm.StreamData\n  length: 70\n")
    record = evaluate_lm(checkpoint, split="valid", stride=16, tasks=[], device="cpu")
    model = load_causal_lm(checkpoint, "cpu").model
    stream = StreamData(70).tokens("valid")
    assert record["metrics"] == pytest.approx(
        {
            "valid/ppl": perplexity(model, stream, BLOCK).ppl,
            "valid/ppl_sliding_16": perplexity(model, stream, BLOCK, 16).ppl,
        }
    )
    assert record["data"].endswith(".hydra/config.yaml: data")


def test_flat_metrics_keep_numbers_and_name_filters():
    per_task = {
        "piqa": {"alias": "piqa", "acc,none": 0.5, "acc_stderr,none": "N/A", "acc_norm,none": 0.25},
        "gsm": {"exact_match,strict": 0.1},
    }
    assert flat_lm_eval_metrics(per_task) == {
        "piqa/acc": 0.5,
        "piqa/acc_norm": 0.25,
        "gsm/exact_match/strict": 0.1,
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--tasks", "none"], r"\.hydra/config\.yaml not found.*--data"),
        (["--tasks", "none", "--data", "tokens.csv"], r"\.npy / \.bin / \.txt"),
        (["--tasks", "none", "--data", "missing.bin"], "missing.bin does not exist"),
        (["--tasks", "none", "--data", "split.txt", "--stride", "99"], "stride <= block_size"),
    ],
)
def test_bad_input_is_one_line(lm_checkpoint, tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "split.txt").write_text(TEXT, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(lm_checkpoint), "--device", "cpu", *arguments])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--ckpt", str(tmp_path / "nope.ckpt"), "--tasks", "none"])
    assert "nope.ckpt does not exist" in capsys.readouterr().err


def test_a_checkpoint_trained_compiled_loads_uncompiled(lm_checkpoint, tmp_path):
    """A GPU recipe trains with task.compile; evaluation must not compile anew for every sequence length."""
    checkpoint = torch.load(lm_checkpoint, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["compile"] = True
    compiled_run = tmp_path / "compiled.ckpt"
    torch.save(checkpoint, compiled_run)
    assert not load_causal_lm(compiled_run, "cpu").model.compiled
