"""The lm-eval tasks of the suite: where their YAMLs are, and which metric each column of the HGRN2 commonsense
table reports.

The HGRN2 figure (hgrn-paper-facts §3.2) does not name its metrics. Its GLA, Mamba and RetNet rows are copied from
the GLA paper, whose convention is acc_norm (length-normalised accuracy) for HellaSwag and ARC-c and acc elsewhere;
OpenBookQA is not in the GLA table, and its baseline rows (GPT-Neo 125M 26.2, Pythia 160M 26.8, 1.4B 31.4) are at the
level of lm-eval's acc_norm for those models (their acc is below 20). So: acc for PIQA, WinoGrande, ARC-e;
acc_norm for HellaSwag, ARC-c, OpenBookQA [inferred, not stated in the paper]. Records keep both; tables pick these.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parents[3] / "tasks" / "lm_eval"  # the repository's tasks/lm_eval/
COMMONSENSE_TAG = "hgrn2_commonsense"  # lm-eval tag of the table's six tasks (`--tasks hgrn2_commonsense`)
TABLE_METRICS = {
    "piqa": "acc",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "openbookqa": "acc_norm",
}
DEFAULT_TASKS = (*TABLE_METRICS, "lambada_openai")
