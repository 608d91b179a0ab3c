"""The paper tables, rendered only from records, beside the published numbers of results/paper/<table>.yaml.

    python -m hgrn.results.tables                      # every table (`make tables`)
    python -m hgrn.results.tables lra --runs results/runs --out results/tables

Each table is one small function from its paper file to a `Spec` (hgrn.results.table); the studies (the expand-ratio
ablation, MQAR) take runs whose overrides change only their swept keys and pick each cell's runs by config. Writes
<table>.md, <table>.tex and <table>.csv; records that cannot be used are listed on stderr with their path and left out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from hgrn.io import atomic_writes
from hgrn.results.collect import TRAINING, Skipped, collect
from hgrn.results.readme import block, update
from hgrn.results.render import csv_text, latex, markdown
from hgrn.results.table import Line, Measure, Published, Spec, build

REPO = Path(__file__).resolve().parents[3]
PAPER_DIR = REPO / "results" / "paper"
DEFAULT_RUNS = ("outputs", "results/runs")
SELECTION = (
    "ours: only runs that followed their experiment's recipe as it stands today (no override that changes the model, "
    "data or budget, unless the recipe has since adopted it; no model setting the recipe has since changed) and "
    "finished it; mean ± std over seeds where there are several; † the best of a sweep over optimiser settings "
    "by the validation monitor (its setting in the CSV). Each number links to its record. no run: no such run yet; "
    "the runs that do not qualify are listed under Other runs."
)
UNVERIFIED = (
    "paper: the published numbers of this table are unverified (the paper could not be read; hgrn-paper-facts.md "
    "§3.3), so none is shown; results/paper/{name}.yaml says what is known."
)


def load_paper(name: str) -> dict[str, Any]:
    return yaml.safe_load((PAPER_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def lra_spec(paper: dict[str, Any]) -> Spec:
    tasks, metric = paper["tasks"], paper["metric"]
    lines = []
    for model, entries in paper["models"].items():
        ours = tuple(Measure(entries[task]["experiment"], metric) for task in tasks)
        published = tuple(Published(entries[task]["paper"]) for task in tasks)
        lines.append(Line((model, "ours"), ours, average=True))
        lines.append(Line((model, "paper"), published, average=True, published_average=entries["avg"]))
    return Spec(
        name="lra",
        title="Long Range Arena: test accuracy (%)",
        label_header=("model", "source"),
        columns=tuple(tasks),
        lines=tuple(lines),
        records=TRAINING,
        paper_file="results/paper/lra.yaml",
        scale=100.0,
        alternative="last_weights",
        notes=(
            "ours: test accuracy at the best validation checkpoint (val/acc); lra.csv also gives the test accuracy "
            "of the last weights (column last_weights), which the official LRA code tests at the end; which of the "
            "two the papers report is not stated.",
            SELECTION,
            "paper: results/paper/lra.yaml (HGRN2 paper, LRA table). avg: the mean of the six tasks.",
        ),
    )


def commonsense_spec(paper: dict[str, Any]) -> Spec:
    tasks, acc_only = paper["tasks"], set(paper["acc_only"])
    lines = []
    for entry in paper["models"]:
        labels = (entry["model"], entry["params"], entry["tokens"])
        if entry.get("experiment"):
            for measure in ("acc", "acc_norm"):
                metrics = [f"{t}/{'acc' if t in acc_only else measure}" for t in tasks]
                ours = tuple(Measure(entry["experiment"], m) for m in metrics)
                lines.append(Line((*labels, f"ours {measure}"), ours, average=True))
        published = tuple(Published(value) for value in entry["paper"])
        lines.append(Line((*labels, "paper"), published, average=True, published_average=entry["avg"]))
    return Spec(
        name="commonsense",
        title="Commonsense reasoning, zero-shot lm-eval: accuracy (%)",
        label_header=("model", "params (B)", "tokens (B)", "source"),
        columns=tuple(paper["columns"]),
        lines=tuple(lines),
        records="lm",
        paper_file="results/paper/commonsense.yaml",
        scale=100.0,
        notes=(
            "ours: lm-eval acc and acc_norm (WinoGrande has acc only, used in both lines) of the best checkpoint of "
            "each conf/experiment/lm/pile/ run (python -m hgrn.eval.lm); which of the two the paper's columns use is "
            "not stated.",
            SELECTION,
            "paper: results/paper/commonsense.yaml (HGRN2 paper, LLM table). avg: the mean of the six tasks.",
        ),
    )


def _ours_only_spec(name: str, title: str, paper: dict[str, Any], scale: float, notes: Sequence[str]) -> Spec:
    """A table of our lines only (no verified published numbers to stand beside them)."""
    columns = tuple(paper["metrics"])
    lines = tuple(
        Line((model, "ours"), tuple(Measure(entry["experiment"], paper["metrics"][c]) for c in columns))
        for model, entry in paper["models"].items()
    )
    return Spec(
        name=name,
        title=title,
        label_header=("model", "source"),
        columns=columns,
        lines=lines,
        records=paper["records"],
        paper_file=f"results/paper/{name}.yaml",
        scale=scale,
        notes=tuple(notes),
    )


def _unverified_spec(name: str, title: str, paper: dict[str, Any], scale: float, note: str) -> Spec:
    """A table whose published numbers are unverified: our lines only, and a note that says so."""
    if paper.get("verified", True):
        raise ValueError(f"results/paper/{name}.yaml has verified numbers; give {name} paper lines")
    return _ours_only_spec(name, title, paper, scale, (note, SELECTION, UNVERIFIED.format(name=name)))


def wikitext103_spec(paper: dict[str, Any]) -> Spec:
    note = (
        "ours: perplexity of the training run: val, the best validation perplexity; test, the whole test split at "
        "the best validation checkpoint, in non-overlapping blocks of 512 (every token scored once)."
    )
    return _unverified_spec("wikitext103", "WikiText-103: perplexity", paper, 1.0, note)


def ptb_spec(paper: dict[str, Any]) -> Spec:
    notes = (
        "ours: perplexity of the training run (conf/recipe/lm/ptb.yaml, the WikiText-103 recipe at reduced scale): "
        "val, the best validation perplexity; test, the whole test split at the best validation checkpoint, in "
        "non-overlapping blocks of 512.",
        SELECTION,
        "Not a paper table: the papers report no Penn Treebank numbers; this is the suite's always-offline check.",
    )
    return _ours_only_spec("ptb", "Penn Treebank: perplexity", paper, 1.0, notes)


def ptb_lm_eval_spec(paper: dict[str, Any]) -> Spec:
    notes = (
        "ours: zero-shot lm-eval accuracy of each Penn Treebank run's best checkpoint (python -m hgrn.eval.lm, every "
        "example of each task): acc_norm for HellaSwag, ARC-c and OpenBookQA, acc elsewhere (both are in the records).",
        SELECTION,
        "Not a paper table: 41.5M-parameter models trained on 1.1M tokens score near chance (50% PIQA and WinoGrande, "
        "25% the others); it shows the evaluation path working end to end.",
    )
    return _ours_only_spec(
        "ptb_lm_eval", "Penn Treebank checkpoints: zero-shot lm-eval accuracy (%)", paper, 100.0, notes
    )


def fashion_mnist_spec(paper: dict[str, Any]) -> Spec:
    notes = (
        "ours: top-1 / top-5 on the 10,000 test images, which also serve as the validation set (as ImageNet's val "
        "does under DeiT), at the best validation checkpoint; the ImageNet pipeline and DeiT recipe with one small "
        "budget for every model (conf/recipe/imagenet/fashion_mnist.yaml).",
        SELECTION,
        "Not a paper table: no paper reports Fashion-MNIST; it runs the ImageNet pipeline on real images offline.",
    )
    return _ours_only_spec("fashion_mnist", "Fashion-MNIST, ImageNet recipe: accuracy (%)", paper, 100.0, notes)


def imagenet_spec(paper: dict[str, Any]) -> Spec:
    note = "ours: top-1 / top-5 accuracy on the validation set at the best validation checkpoint."
    return _unverified_spec("imagenet", "ImageNet-1K: accuracy (%)", paper, 100.0, note)


def _ablation_lines(paper: dict[str, Any], model: str, entry: dict[str, Any]) -> list[Line]:
    """One `ours` line per point of a model's sweep (and a `paper` line where the paper gives a number); every cell
    allows the model's swept keys and picks its runs by all of them, so no run counts for two points."""
    metrics, scales = paper["metrics"], paper["scales"]
    lines = []
    for row in entry["rows"]:
        config = tuple({**entry["base"], **row["config"]}.items())
        labels = (model, str(row.get("expand ratio", "-")), row["variant"])
        experiments = [f"ablation/{folder}/{entry['experiment']}" for folder in scales.values()]
        ours = tuple(Measure(e, metrics[m], tuple(entry["base"]), config) for e in experiments for m in metrics)
        lines.append(Line((*labels, "ours"), ours))
        published = row.get("paper") or {}
        if any(value is not None for value in published.values()):
            if not paper["verified"]:
                raise ValueError("results/paper/ablation.yaml is marked verified: false but holds a number")
            cells = tuple(Published(published.get(m)) if s == "wt103" else None for s in scales for m in metrics)
            lines.append(Line((*labels, "paper"), cells))
    return lines


def ablation_spec(paper: dict[str, Any]) -> Spec:
    lines = [line for model, entry in paper["models"].items() for line in _ablation_lines(paper, model, entry)]
    notes = [
        "ours: HGRN2 at expand ratio 1 to 128 (4 d² token-mixer weights at every ratio) and the switches the code has "
        "(lower bound off, the output gate's activation, HGRN1 complex / real and its gate-norm order), with HGRN1, "
        "GLA and attention at the same size: conf/experiment/ablation/<scale>/, run by `make ablation` "
        "(ABLATION=ptb|wikitext103). Perplexity of the training run: val, the best validation perplexity; test, the "
        "test split at the best validation checkpoint. A run counts for a line when its overrides change only the "
        "line's swept keys (results/paper/ablation.yaml) and its config holds the line's values.",
        "ptb: the WikiText-103 recipe at reduced scale on Penn Treebank, 1,400 updates "
        "(conf/recipe/lm/ptb_ablation.yaml, not a paper setting); wt103: the HGRN2 paper's WikiText-103 recipe. "
        "No switch turns the output gate off: HGRN1's gate always multiplies, HGRN2's output gate is its query "
        "(q_act sets its activation).",
        SELECTION,
    ]
    if not paper["verified"]:
        notes.append(UNVERIFIED.format(name="ablation"))
    return Spec(
        name="ablation",
        title="Expand-ratio ablation: perplexity",
        label_header=("model", "expand ratio", "variant", "source"),
        columns=tuple(f"{scale} {metric}" for scale in paper["scales"] for metric in paper["metrics"]),
        lines=tuple(lines),
        records=paper["records"],
        paper_file="results/paper/ablation.yaml",
        notes=tuple(notes),
    )


MQAR_KEYS = ("model.d_model", "data.seq_len", "data.num_kv_pairs")


def _mqar_measure(entry: dict[str, Any], metric: str, d_model: int, seq_len: int, kv: int) -> Measure | None:
    """The cell of one (model, seq_len, kv pairs, d_model); None where the model's head size does not divide d."""
    config = entry.get("config", {})
    ratio = config.get("model.mixer_options.expand_ratio")
    if ratio is not None and d_model % ratio:
        return None
    values = (*zip(MQAR_KEYS, (d_model, seq_len, kv), strict=True), *config.items())
    return Measure(entry["experiment"], metric, (*MQAR_KEYS, *config), tuple(values))


def mqar_spec(paper: dict[str, Any]) -> Spec:
    lines = tuple(
        Line(
            (str(seq_len), str(kv), model),
            tuple(_mqar_measure(entry, paper["metric"], d, seq_len, kv) for d in paper["d_models"]),
        )
        for seq_len, kv in paper["pairs"]
        for model, entry in paper["models"].items()
    )
    return Spec(
        name="mqar",
        title="MQAR (Zoology): accuracy (%) by model dimension",
        label_header=("seq len", "kv pairs", "model"),
        columns=tuple(f"d {d}" for d in paper["d_models"]),
        lines=lines,
        records=paper["records"],
        paper_file="results/paper/mqar.yaml",
        scale=100.0,
        notes=(
            "ours: accuracy over the queried positions at the best validation checkpoint of conf/experiment/mqar/ "
            "runs (`make mqar`); validation and test are the same 3,000 examples, as in Zoology. A run counts for a "
            "cell when its overrides change only d_model, seq_len, num_kv_pairs (and HGRN2's expand ratio) and its "
            "config holds the cell's values; its lr sweep is the cell's sweep: † the lr with the best validation "
            "accuracy (its setting in mqar.csv). -: the expand ratio does not divide d.",
            SELECTION,
            "paper: the HGRN2 paper shows MQAR as a figure only; no number is read off it (results/paper/mqar.yaml).",
        ),
    )


SPECS: dict[str, Callable[[dict[str, Any]], Spec]] = {
    "lra": lra_spec,
    "wikitext103": wikitext103_spec,
    "ptb": ptb_spec,
    "ptb_lm_eval": ptb_lm_eval_spec,
    "commonsense": commonsense_spec,
    "imagenet": imagenet_spec,
    "fashion_mnist": fashion_mnist_spec,
    "ablation": ablation_spec,
    "mqar": mqar_spec,
}


def render(names: Sequence[str], roots: Iterable[Path | str], out: Path, readme: Path | None = None) -> list[Skipped]:
    """Write every named table under `out` from the records under `roots`, and into `readme`'s table blocks
    (hgrn.results.readme) when given; returns the records left out."""
    runs, skipped = collect(roots)
    out.mkdir(parents=True, exist_ok=True)
    blocks = {}
    for name in names:
        table, missing = build(SPECS[name](load_paper(name)), runs)
        skipped += missing
        texts = {"md": markdown(table, out), "tex": latex(table), "csv": csv_text(table, out)}
        with atomic_writes([out / f"{name}.{suffix}" for suffix in texts]) as files:
            for file, text in zip(files, texts.values(), strict=True):
                file.write(text)
        if readme is not None:
            blocks[name] = block(markdown(table, readme.parent))
    if readme is not None:
        update(readme, blocks)
    return skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the paper tables from results.json / evaluation.json files.")
    parser.add_argument("tables", nargs="*", help=f"any of {' '.join(SPECS)} (default: all of them)")
    parser.add_argument("--runs", nargs="+", help=f"folders searched for records (default: {' '.join(DEFAULT_RUNS)})")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    parser.add_argument("--readme", type=Path, help="also rewrite this README's table blocks (make tables: README.md)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.tables if name not in SPECS]
    if unknown:
        parser.error(f"no table {' '.join(unknown)}; the tables are {' '.join(SPECS)}")
    absent = [root for root in args.runs or () if not Path(root).is_dir()]
    if absent:
        parser.error(f"--runs {' '.join(absent)}: no such folder (give the folders that hold the runs' records)")
    names = args.tables or list(SPECS)
    if args.readme is not None and not args.readme.is_file():
        parser.error(f"--readme {args.readme}: no such file")
    # a default folder may be absent in a fresh clone
    skipped = render(names, args.runs or DEFAULT_RUNS, args.out, args.readme)
    for problem in dict.fromkeys(str(s) for s in skipped):
        print(problem, file=sys.stderr)
    print(f"wrote {', '.join(names)} to {args.out}/ (.md, .tex, .csv); {len(skipped)} record(s) skipped")


if __name__ == "__main__":
    main()
