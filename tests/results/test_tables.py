"""The tables are rendered only from records: a debug run or a sweep cannot put the wrong number in a paper table,
seeds are averaged, every number links to its record, broken records are reported with their path and left out, and
the committed tables are what `make tables` renders from the committed runs."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from hgrn.results import write_evaluation, write_record
from hgrn.results.collect import collect
from hgrn.results.readme import block, embedded, update
from hgrn.results.render import number
from hgrn.results.table import Line, Measure, Spec, build
from hgrn.results.tables import SPECS, main
from tests.results.records import LISTOPS, training, write_run

REPO = Path(__file__).resolve().parents[2]
TEXT = "lra/hgrn2/text"
DEBUG = [f"experiment={LISTOPS}", "model.n_layers=1", "model.d_model=32", "trainer.max_steps=5", "data.data_dir=demo"]


def render(runs: Path, out: Path, *tables: str) -> dict[str, str]:
    main([*tables, "--runs", str(runs), "--out", str(out)])
    return {path.name: path.read_text() for path in sorted(out.iterdir())}


def main_table(markdown: str) -> str:
    return markdown.split("## Other runs")[0]


def row(markdown: str, *labels: str) -> str:
    prefix = "| " + " | ".join(labels) + " |"
    (line,) = [line for line in markdown.splitlines() if line.startswith(prefix)]
    return line


def test_a_debug_run_goes_to_other_runs_and_leaves_the_paper_table_alone(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "recipe", acc=0.4375, best=0.44)
    before = main_table(render(runs, tmp_path / "before", "lra")["lra.md"])
    write_run(runs, "debug", acc=0.1110, best=0.9, overrides=DEBUG, finished_at="2026-12-01T00:00:00+00:00")
    after = render(runs, tmp_path / "after", "lra")["lra.md"]
    assert main_table(after) == before
    assert "[43.75](../runs/recipe/results.json)" in row(after, "hgrn2", "ours")
    other = row(after, LISTOPS)
    assert "`model.n_layers=1` `model.d_model=32` `trainer.max_steps=5`" in other
    assert "overrides change the model, data or budget" in other and "listops 11.10" in other
    assert "data.data_dir" not in other  # neutral overrides are not shown


def test_the_table_judges_runs_by_the_recipe_as_it_stands_today(tmp_path):
    """HGRN2's ListOps recipe scans one way since issue 18. A run that set model.direction=causal before the recipe did
    fills the table; one that followed the recipe of its day (both ways, no override) has drifted and stays out, and
    the table says why; so does an override to a value the recipe does not have. No record is rewritten."""
    runs = tmp_path / "runs"
    adopted, other = ([f"experiment={LISTOPS}", f"model.direction={d}"] for d in ("causal", "bidirectional"))
    both_ways = {"model": {"mixer": "hgrn2", "direction": "bidirectional"}}
    write_run(runs, "adopted", acc=0.6005, best=0.6075, overrides=adopted, config={"model": {"direction": "causal"}})
    write_run(runs, "other", acc=0.9, best=0.9, overrides=other, config=both_ways)
    write_run(runs, "drifted", acc=0.95, best=0.95, config=both_ways)
    markdown = render(runs, tmp_path / "tables", "lra")["lra.md"]
    assert "[60.05](../runs/adopted/results.json)" in row(markdown, "hgrn2", "ours")
    lines = markdown.splitlines()
    (drifted,), (changed,) = ([line for line in lines if f"/{n}/results.json)" in line] for n in ("drifted", "other"))
    assert "trained before the recipe changed model.direction: bidirectional, now causal" in drifted
    assert "overrides change the model" not in drifted
    assert "overrides change the model, data or budget" in changed and "recipe changed" not in changed
    assert json.loads((runs / "drifted" / "results.json").read_text())["recipe"] is True


def test_an_unfinished_run_is_not_in_the_table(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "stopped", acc=0.6, best=0.6, finished=False, steps=7155, planned_steps=37500)
    markdown = render(runs, tmp_path / "tables", "lra")["lra.md"]
    assert row(markdown, "hgrn2", "ours").startswith("| hgrn2 | ours | no run |")
    assert "did not finish its budget (7,155 of 37,500 steps)" in row(markdown, LISTOPS)


def test_a_sweep_shows_its_best_setting_by_validation_with_the_mean_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    lr = [f"experiment={LISTOPS}", "optim.lr=1e-3"]
    write_run(runs, "lr1e-3-s1", acc=0.50, best=0.60, overrides=[*lr, "seed=1"], seed=1)
    write_run(runs, "lr1e-3-s2", acc=0.54, best=0.62, overrides=[*lr, "seed=2"], seed=2)
    # a better test accuracy but a worse validation accuracy, and the last to finish: not chosen
    late = "2026-12-24T00:00:00+00:00"
    write_run(
        runs, "lr5e-4", acc=0.70, best=0.55, overrides=[f"experiment={LISTOPS}", "optim.lr=5e-4"], finished_at=late
    )
    # the same seed run twice: the better validation accuracy stands for the seed
    write_run(runs, "lr1e-3-s1-again", acc=0.10, best=0.50, overrides=[*lr, "seed=1"], seed=1, finished_at=late)
    tables = render(runs, tmp_path / "tables", "lra")
    cell = row(tables["lra.md"], "hgrn2", "ours").split(" | ")[2]
    assert cell == "52.00 ± 2.83† ([1](../runs/lr1e-3-s1/results.json), [2](../runs/lr1e-3-s2/results.json))"
    csv_line = next(line for line in tables["lra.csv"].splitlines() if line.startswith("hgrn2,ours,listops,"))
    fields = csv_line.split(",")
    assert fields[3:8] == ["52.0000", "2.8284", "2", "51.0000", "optim.lr=1e-3"]  # value, std, seeds, last, setting
    assert fields[8] == "../runs/lr1e-3-s1/results.json;../runs/lr1e-3-s2/results.json"
    others = tables["lra.md"].split("## Other runs")[1]
    assert "lr5e-4/results.json" in others and "lr1e-3-s1-again/results.json" in others
    assert "not chosen: another run of its cell had a better val/acc" in others


def test_the_lra_table_states_its_test_protocol_and_the_csv_has_the_other(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", acc=0.55, best=0.56)
    write_run(runs, "b", acc=0.70, best=0.71, experiment=TEXT, overrides=[f"experiment={TEXT}"])
    tables = render(runs, tmp_path / "tables", "lra")
    assert "test accuracy at the best validation checkpoint" in tables["lra.md"]
    assert "test accuracy of the last weights (column last_weights)" in tables["lra.md"]
    header = tables["lra.csv"].splitlines()[0]
    assert header == "model,source,column,value,std,seeds,last_weights,setting,records"
    assert "hgrn2,ours,text,70.0000,,1,69.0000,,../runs/b/results.json" in tables["lra.csv"]
    assert row(tables["lra.md"], "hgrn2", "paper") == (
        "| hgrn2 | paper | 60.52 | 88.97 | 95.07 | 89.33 | 93.95 | 98.12 | 87.66 |"
    )
    assert "hgrn2,paper,listops,60.5200,,,,,results/paper/lra.yaml" in tables["lra.csv"]


def write_broken_records(runs: Path) -> list[Path]:
    """Every way a record can be unusable, each for LRA ListOps with an accuracy of 12.34% that must not appear."""
    good = asdict(training(metrics={"test/acc": 0.1234, "val/acc_best": 0.1234}))
    contents = {
        "truncated": json.dumps(good)[:200].encode(),
        "wrong-type": json.dumps({**good, "steps": "many"}).encode(),
        "nan": json.dumps({**good, "metrics": {"test/acc": float("nan"), "val/acc_best": 0.1}}).encode(),
        "wrong-version": json.dumps({**good, "schema_version": 99}).encode(),
        "not-utf8": b"\xff\xfe{",
    }
    paths = []
    for name, content in contents.items():
        path = runs / name / "results.json"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
        paths.append(path)
    paths.append(write_record(runs / "missing-metric" / "results.json", training(metrics={"val/acc_best": 0.1234})))
    unreadable = runs / "unreadable" / "results.json"
    unreadable.mkdir(parents=True)  # a folder where the file should be: reading it fails with an OSError
    return [*paths, unreadable]


def test_every_broken_record_is_reported_with_its_path_and_never_rendered(tmp_path, capsys):
    runs = tmp_path / "runs"
    broken = write_broken_records(runs)
    write_run(runs, "good", acc=0.4, best=0.4)
    tables = render(runs, tmp_path / "tables")
    err = capsys.readouterr().err.splitlines()
    for path in broken:
        assert any(line.startswith(f"skipped {path}: ") for line in err), (path, err)
    assert len(err) == len(broken)
    assert all("12.34" not in text for text in tables.values())
    assert "[40.00](../runs/good/results.json)" in tables["lra.md"]
    assert sorted(tables) == sorted(f"{name}.{suffix}" for name in SPECS for suffix in ("csv", "md", "tex"))


def test_an_lm_eval_record_fills_the_commonsense_table_through_its_training_run(tmp_path):
    runs = tmp_path / "runs"
    experiment = "lm/pile/hgrn2-150m"
    trained = training(experiment=experiment, overrides=[f"experiment={experiment}"], monitor="val/loss")
    write_record(runs / "train" / "results.json", trained)
    tasks = ("piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
    metrics = {f"{t}/acc": 0.5 for t in tasks} | {f"{t}/acc_norm": 0.6 for t in tasks if t != "winogrande"}
    checkpoint = runs / "train" / "checkpoints" / "best.ckpt"
    overrides = [f"experiment={experiment}", f"ckpt_path={checkpoint}"]
    write_evaluation(
        runs / "eval" / "evaluation.json", experiment=experiment, checkpoint=checkpoint, metrics=metrics,
        evaluation="lm", overrides=overrides,
    )  # fmt: skip
    markdown = render(runs, tmp_path / "tables", "commonsense")["commonsense.md"]
    ours_acc = row(markdown, "HGRN2", "0.15", "100", "ours acc")
    assert ours_acc.count("[50.00](../runs/eval/evaluation.json)") == 6 and ours_acc.endswith("| 50.00 |")
    ours_norm = row(markdown, "HGRN2", "0.15", "100", "ours acc_norm")
    assert ours_norm.count("[60.00]") == 5 and ours_norm.count("[50.00]") == 1  # WinoGrande: acc
    assert row(markdown, "HGRN2", "0.15", "100", "paper").endswith(
        "| 66.43 | 35.44 | 51.70 | 46.63 | 24.32 | 28.40 | 42.15 |"
    )
    assert row(markdown, "GPT-Neo", "0.13", "300", "paper")  # a baseline: its published line only
    assert "results/runs" not in markdown and "train/results.json" not in markdown  # training records feed no cell


def test_tables_with_unverified_paper_numbers_say_so_and_show_none(tmp_path):
    tables = render(tmp_path, tmp_path / "tables", "wikitext103", "imagenet")
    for name in ("wikitext103", "imagenet"):
        assert "published numbers of this table are unverified" in tables[f"{name}.md"]
        assert "| paper |" not in tables[f"{name}.md"]
        assert row(tables[f"{name}.md"], "hgrn2" if name == "wikitext103" else "hgrn2-tiny", "ours").endswith(
            "| no run | no run |"
        )


def test_latex_is_a_booktabs_tabular_with_every_row_complete(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "s1", acc=0.50, best=0.60, overrides=[f"experiment={LISTOPS}", "seed=1", "optim.lr=1"], seed=1)
    write_run(runs, "s2", acc=0.54, best=0.62, overrides=[f"experiment={LISTOPS}", "seed=2", "optim.lr=1"], seed=2)
    write_run(runs, "s3", acc=0.54, best=0.50, overrides=[f"experiment={LISTOPS}", "optim.lr=2"], seed=3)
    tables = render(runs, tmp_path / "tables")
    for name in SPECS:
        lines = [line for line in tables[f"{name}.tex"].splitlines() if not line.startswith("%")]
        spec = re.fullmatch(r"\\begin\{tabular\}\{([lr]+)\}", lines[0])
        assert spec is not None and lines[1] == r"\toprule" and lines[3] == r"\midrule"
        assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
        body = [lines[2], *lines[4:-2]]
        assert body and all(line.endswith(r" \\") for line in body)
        assert all(len(re.split(r"(?<!\\)&", line)) == len(spec.group(1)) for line in body)
        assert all(not re.search(r"(?<!\\)[_%#]", line) for line in body)
    listops = row(tables["lra.md"], "hgrn2", "ours")
    assert "52.00 ± 2.83†" in listops
    assert r"hgrn2 & ours & 52.00 $\pm$ 2.83$^\dagger$ & no run" in tables["lra.tex"]


def test_the_committed_tables_are_what_make_tables_renders_from_the_committed_runs(tmp_path, capsys):
    runs = tmp_path / "results" / "runs"
    shutil.copytree(REPO / "results" / "runs", runs)
    tables = render(runs, tmp_path / "results" / "tables")
    committed = REPO / "results" / "tables"
    assert sorted(tables) == sorted(path.name for path in committed.iterdir())
    for name, text in tables.items():
        assert text == (committed / name).read_text(), name
    assert capsys.readouterr().err == ""


def test_bad_arguments_are_refused_in_one_line(tmp_path, capsys):
    for argv, message in (
        (["lra", "--runs", str(tmp_path / "absent")], "absent: no such folder"),
        (
            ["lra", "nosuch"],
            "no table nosuch; the tables are lra wikitext103 ptb ptb_lm_eval commonsense imagenet fashion_mnist "
            "ablation mqar",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--out", str(tmp_path / "tables")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()


def test_a_study_table_is_a_small_spec_over_runs_that_differ_in_its_keys(tmp_path):
    """The expand-ratio ablation as a table: one line per ratio, its runs allowed to change that key only."""
    experiment, key = "lm/wikitext103/hgrn2", "model.mixer_options.expand_ratio"
    runs = tmp_path / "runs"
    for name, ratio, seed, ppl, more in (
        ("r1", 1, 1, 30.0, []),
        ("r4-s1", 4, 1, 25.0, []),
        ("r4-s2", 4, 2, 26.0, ["seed=2"]),
        ("r4-small", 4, 1, 20.0, ["model.n_layers=1"]),
    ):
        record = training(
            experiment=experiment,
            overrides=[f"experiment={experiment}", f"{key}={ratio}", *more],
            seed=seed,
            config={"model": {"mixer_options": {"expand_ratio": ratio}}},
            metrics={"test/ppl": ppl, "val/loss_best": ppl / 10},
            monitor="val/loss",
            monitor_mode="min",
        )
        write_record(runs / name / "results.json", record)
    lines = tuple(Line((str(r),), (Measure(experiment, "test/ppl", (key,), ((key, r),)),)) for r in (1, 2, 4))
    spec = Spec("ablation", "Expand ratio", ("expand ratio",), ("test ppl",), lines, "training", "-")
    table, skipped = build(spec, collect([runs])[0])
    assert skipped == []
    assert [number(cells[0], 2) for _, cells in table.rows] == ["30.00", "no run", "25.50 ± 0.71"]
    (other,) = table.others
    assert other.run.path == runs / "r4-small" / "results.json"
    assert other.reason == "overrides change the model, data or budget"


def test_the_readme_embeds_every_table_as_make_tables_renders_it(tmp_path):
    """Every table has its block in the README, and rendering the committed runs rewrites none of them."""
    runs = tmp_path / "results" / "runs"
    shutil.copytree(REPO / "results" / "runs", runs)
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    main(["--runs", str(runs), "--out", str(tmp_path / "results" / "tables"), "--readme", str(readme)])
    assert readme.read_text() == (REPO / "README.md").read_text()
    blocks = embedded(readme.read_text())
    assert sorted(blocks) == sorted(SPECS)
    assert blocks["ptb"].startswith("### Penn Treebank: perplexity\n")
    assert "[40.61](results/runs/ptb-hgrn2-h200/results.json)" in blocks["ptb"]  # links from the README's folder


def test_readme_blocks_are_replaced_and_other_text_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:ptb -->\nold\n<!-- /table:ptb -->\nouter\n")
    assert update(readme, {"ptb": block("# T\n\n| a |\n## Other runs\n"), "lra": "x"}) == ["ptb"]
    expected = "intro\n<!-- table:ptb -->\n### T\n\n| a |\n#### Other runs\n<!-- /table:ptb -->\nouter\n"
    assert readme.read_text() == expected
