"""The study tables (the expand-ratio ablation, MQAR) from synthetic records: each line or cell takes the runs whose
overrides change only its swept keys and whose config holds its values; a sweep shows its best point by the
validation monitor, seeds give mean ± std, a debug run stays out. Then what the notebooks read (`hgrn.results.access`)
and the notebooks themselves, executed headless on the committed results plus these records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hgrn.results import write_record
from hgrn.results.access import expand_ratio_benchmark, kernel_benchmark, learning_curves, table_records
from hgrn.results.identity import follows_recipe
from hgrn.results.tables import main
from tests.results.records import training
from tests.results.test_tables import row

REPO = Path(__file__).resolve().parents[2]
RATIO, LOWER_BOUND, Q_ACT = "model.mixer_options.expand_ratio", "model.lower_bounds", "model.mixer_options.q_act"
HGRN2_BASE = {RATIO: 128, LOWER_BOUND: True, Q_ACT: "silu"}
LATE = "2026-12-24T00:00:00+00:00"


def nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"model.d_model": 64} -> {"model": {"d_model": 64}}: a resolved config holding these values."""
    config: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def write(root: Path, name: str, experiment: str, overrides: list[str], config: dict[str, Any], **changes: Any) -> None:
    """root/name/results.json: a finished run of `experiment` with these overrides and resolved config values."""
    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 2222)
    record = training(
        experiment=experiment,
        overrides=[f"experiment={experiment}", *overrides],
        recipe=follows_recipe([f"experiment={experiment}", *overrides]),
        seed=seed,
        config=nested(config),
        **changes,
    )
    write_record(root / name / "results.json", record)


def write_lm(root: Path, name: str, experiment: str, overrides: list[str], config: dict[str, Any], *, val: float,
             test: float, **changes: Any) -> None:  # fmt: skip
    metrics = {"test/ppl": test, "test/loss": 3.0, "val/ppl_best": val}
    write(root, name, experiment, overrides, config, metrics=metrics, monitor="val/ppl", monitor_mode="min", **changes)


def write_ablation_runs(root: Path) -> None:
    hgrn2 = "ablation/ptb/hgrn2"
    for seed, val, test in ((0, 30.0, 31.0), (1, 32.0, 33.0)):  # two seeds of ratio 1
        write_lm(
            root, f"r1-s{seed}", hgrn2, [f"{RATIO}=1", f"seed={seed}"], {**HGRN2_BASE, RATIO: 1}, val=val, test=test
        )
    for lr, val, test in (("1e-3", 25.0, 26.0), ("5e-4", 27.0, 20.0)):  # an lr sweep at ratio 8: best val wins
        write_lm(
            root, f"r8-lr{lr}", hgrn2, [f"{RATIO}=8", f"optim.lr={lr}"], {**HGRN2_BASE, RATIO: 8}, val=val, test=test
        )
    write_lm(root, "r128", hgrn2, [], HGRN2_BASE, val=24.0, test=24.5)
    write_lm(root, "no-lb", hgrn2, [f"{LOWER_BOUND}=false"], {**HGRN2_BASE, LOWER_BOUND: False}, val=28.0, test=29.0)
    # a debug run of the same point and an unfinished one: neither may change the table
    debug = [f"{RATIO}=128", "model.n_layers=1", "trainer.max_steps=5"]
    write_lm(root, "debug", hgrn2, debug, HGRN2_BASE, val=2.0, test=2.0, finished_at=LATE)
    write_lm(root, "stopped", hgrn2, [f"{RATIO}=4"], {**HGRN2_BASE, RATIO: 4}, val=3.0, test=3.0, finished=False)
    write_lm(root, "wt103", "ablation/wikitext103/hgrn2", [f"{RATIO}=1"], {**HGRN2_BASE, RATIO: 1}, val=40.0, test=41.0)
    hgrn1 = {LOWER_BOUND: True, "model.mixer_options.norm_before_gate": True}
    after = ["model.mixer_options.norm_before_gate=false"]
    write_lm(root, "hgrn1-after", "ablation/ptb/hgrn1", after, {**hgrn1, "model.mixer_options.norm_before_gate": False},
             val=35.0, test=36.0)  # fmt: skip
    write_lm(root, "gla", "ablation/ptb/gla", [], {}, val=33.0, test=34.0)


def mqar_config(d_model: int, seq_len: int, kv: int, ratio: int | None = None) -> dict[str, Any]:
    return {"model.d_model": d_model, "data.seq_len": seq_len, "data.num_kv_pairs": kv} | (
        {} if ratio is None else {RATIO: ratio}
    )


def write_mqar(root: Path, name: str, model: str, lr: str, acc: float, config: dict[str, Any], *more: str,
               **changes: Any) -> None:  # fmt: skip
    overrides = [f"{key}={value}" for key, value in config.items()] + [f"optim.lr={lr}", *more]
    metrics = {"test/acc": acc, "test/loss": 1.0, "val/acc_best": acc}
    write(root, name, f"mqar/{model}", overrides, config, metrics=metrics, **changes)


def write_mqar_runs(root: Path) -> None:
    for lr, acc in (("1e-4", 0.20), ("1e-3", 0.90), ("1e-2", 0.50)):  # the lr sweep of one cell
        write_mqar(root, f"hgrn2-e16-d64-{lr}", "hgrn2", lr, acc, mqar_config(64, 256, 16, 16))
    write_mqar(root, "hgrn2-e64-d64", "hgrn2", "1e-3", 0.40, mqar_config(64, 256, 16, 64))
    write_mqar(root, "hgrn2-e128-d128", "hgrn2", "1e-3", 0.95, mqar_config(128, 256, 16, 128))
    write_mqar(root, "attention-d64", "attention", "1e-3", 0.999, mqar_config(64, 256, 16))
    write_mqar(root, "attention-d128", "attention", "1e-3", 1.0, mqar_config(128, 256, 16))
    # a debug run with fewer examples: it has the best accuracy and must not show
    debug = ("data.train_examples=1000", "trainer.max_epochs=2")
    write_mqar(root, "hgrn2-debug", "hgrn2", "1e-3", 0.99, mqar_config(64, 256, 16, 16), *debug, finished_at=LATE)


def render(runs: Path, out: Path, *names: str) -> dict[str, str]:
    main([*names, "--runs", str(runs), "--out", str(out)])
    return {path.name: path.read_text() for path in sorted(out.iterdir())}


def cells(line: str) -> list[str]:
    """A Markdown row's cells without their links."""
    return [cell.split("](")[0].lstrip("[").split(" ([")[0] for cell in line.strip("| ").split(" | ")]


def test_the_ablation_table_tells_every_point_apart_averages_seeds_and_keeps_debug_runs_out(tmp_path):
    runs = tmp_path / "runs"
    write_ablation_runs(runs)
    tables = render(runs, tmp_path / "tables", "ablation")
    markdown = tables["ablation.md"]
    assert cells(row(markdown, "hgrn2", "1", "base", "ours"))[4:] == ["31.00 ± 1.41", "32.00 ± 1.41", "40.00", "41.00"]
    assert cells(row(markdown, "hgrn2", "8", "base", "ours"))[4:6] == ["25.00†", "26.00†"]  # lr by val ppl, not test
    assert cells(row(markdown, "hgrn2", "128", "base", "ours"))[4:] == ["24.00", "24.50", "no run", "no run"]
    assert cells(row(markdown, "hgrn2", "128", "no lower bound", "ours"))[4:6] == ["28.00", "29.00"]
    assert cells(row(markdown, "hgrn2", "4", "base", "ours"))[4:6] == ["no run", "no run"]
    assert cells(row(markdown, "hgrn1", "-", "complex, norm after the gate", "ours"))[4:6] == ["35.00", "36.00"]
    assert cells(row(markdown, "hgrn1", "-", "complex", "ours"))[4:6] == ["no run", "no run"]
    assert cells(row(markdown, "gla", "-", "base", "ours"))[4:6] == ["33.00", "34.00"]
    others = markdown.split("## Other runs")[1]
    assert "debug/results.json" in others and "overrides change the model, data or budget" in others
    assert "stopped/results.json" in others and "did not finish its budget" in others
    assert "r8-lr5e-4/results.json" in others and "not chosen" in others
    assert "| paper |" not in markdown and "published numbers of this table are unverified" in markdown
    assert (
        tables["ablation.csv"].splitlines()[0]
        == "model,expand ratio,variant,source,column,value,std,seeds,setting,records"
    )
    assert (
        "hgrn2,8,base,ours,ptb val ppl,25.0000,,1,optim.lr=1e-3,../runs/r8-lr1e-3/results.json"
        in tables["ablation.csv"]
    )


def test_the_mqar_table_shows_the_best_lr_per_cell_and_keeps_debug_runs_out(tmp_path):
    runs = tmp_path / "runs"
    write_mqar_runs(runs)
    markdown = render(runs, tmp_path / "tables", "mqar")["mqar.md"]
    assert cells(row(markdown, "256", "16", "hgrn2 (expand 16)")) == ["256", "16", "hgrn2 (expand 16)", "90.00†",
                                                                    "no run", "no run", "no run"]  # fmt: skip
    assert cells(row(markdown, "256", "16", "hgrn2 (expand 64)"))[3] == "40.00"
    assert cells(row(markdown, "256", "16", "hgrn2 (expand 128)"))[3:5] == ["-", "95.00"]  # 128 does not divide 64
    assert cells(row(markdown, "256", "16", "attention"))[3:5] == ["99.90", "100.00"]
    assert cells(row(markdown, "512", "64", "attention"))[3] == "no run"
    others = markdown.split("## Other runs")[1]
    assert "hgrn2-debug/results.json" in others and "`data.train_examples=1000`" in others
    assert "test/acc 99.00" in others  # one number per metric, not one per column
    assert "hgrn2-e16-d64-1e-4/results.json" in others and "not chosen" in others


def test_table_records_carry_each_cells_values_and_config(tmp_path):
    runs = tmp_path / "runs"
    write_mqar_runs(runs)
    records = table_records("mqar", [runs])
    (cell,) = [r for r in records if r["model"] == "hgrn2 (expand 16)" and r["config"].get("model.d_model") == 64
               and r["seq len"] == "256"]  # fmt: skip
    assert cell["value"] == pytest.approx(90.0) and cell["seeds"] == 1 and cell["setting"] == "optim.lr=1e-3"
    assert cell["column"] == "d 64" and cell["config"]["data.num_kv_pairs"] == 16
    assert cell["records"] == [str(runs / "hgrn2-e16-d64-1e-3" / "results.json")]
    empty = [r for r in records if r["model"] == "hgrn2 (expand 128)" and r["column"] == "d 64"]
    assert all(r["value"] is None and r["empty"] == "-" and r["config"] == {} for r in empty)
    lra = table_records("lra", [tmp_path / "none"])
    assert {r["column"] for r in lra} >= {"listops", "avg"}
    assert [r["value"] for r in lra if (r["model"], r["source"], r["column"]) == ("hgrn2", "paper", "listops")] == [
        60.52
    ]


def test_learning_curves_show_every_run_of_the_prefix_finished_or_not(tmp_path):
    history = [{"step": 750, "epoch": 0, "val/acc": 0.2}, {"step": 1500, "epoch": 1, "val/acc": 0.3}]
    unfinished = training(finished=False, steps=1500, planned_steps=37500, history=history)
    changed = training(overrides=["experiment=lra/hgrn2/listops", "model.d_model=8"], config={"model": {"d_model": 8}})
    for name, record in (("b", unfinished), ("a", changed), ("c", training(experiment="mqar/hgrn2"))):
        write_record(tmp_path / name / "results.json", record)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "results.json").write_text("{")  # unreadable: skipped, as the tables skip it
    curves = learning_curves("lra/", [tmp_path])
    found = [(c["path"].parent.name, c["finished"], c["recipe"]) for c in curves]
    assert found == [("a", True, False), ("b", False, True)]
    assert curves[1]["progress"] == "1,500 of 37,500 steps" and curves[1]["history"] == history
    assert [c["direction"] for c in curves] == [None, None]  # the synthetic records' models name none
    assert curves[0]["config"]["model"]["d_model"] == 8


def test_kernel_benchmark_reads_the_newest_kernel_rows_and_skips_other_files(tmp_path):
    path, rows = kernel_benchmark()
    assert path.parent == REPO / "results" / "bench" and rows
    assert all({"impl", "mode", "B", "T", "H", "D", "ms"} <= set(r) for r in rows)
    assert kernel_benchmark(tmp_path) is None
    row_ = {"impl": "ours", "group": "hgrn2", "op": "hgrn2", "mode": "fwd", "shape_dims": {"B": 1, "T": 8, "H": 1,
            "D": 16}, "ms": 0.5}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps({"date": "2026-01-01", "rows": [row_]}))
    (tmp_path / "new.json").write_text(json.dumps({"date": "2026-02-01", "rows": [{**row_, "ms": 0.25}]}))
    (tmp_path / "steps.json").write_text(json.dumps({"date": "2027-01-01", "rows": [{"experiment": "x"}]}))
    (tmp_path / "broken.json").write_text("{")
    path, rows = kernel_benchmark(tmp_path)
    assert path.name == "new.json" and [r["ms"] for r in rows] == [0.25] and rows[0]["T"] == 8


def test_expand_ratio_benchmark_reads_the_newest_sweep(tmp_path):
    path, rows = expand_ratio_benchmark()
    assert path.name.startswith("expand-ratio-") and any(r["ratio"] == 1 for r in rows)
    assert expand_ratio_benchmark(tmp_path) is None
    row_ = {"case": "ours (hgrn.ops)", "ratio": 1, "fwd_ms": 2.0, "fwd_bwd_ms": 5.0}
    (tmp_path / "expand-ratio-a.json").write_text(json.dumps({"date": "2026-01-01", "rows": [row_]}))
    (tmp_path / "expand-ratio-b.json").write_text(json.dumps({"date": "2026-02-01", "rows": [{**row_, "fwd_ms": 1.0}]}))
    (tmp_path / "expand-ratio-c.json").write_text("{")
    path, rows = expand_ratio_benchmark(tmp_path)
    assert path.name == "expand-ratio-b.json" and [r["fwd_ms"] for r in rows] == [1.0]
    for run, ms in (("", 0.5), ("-2", 0.25), ("-10", 0.125)):  # a day's later runs (hgrn.bench.report.write_dated)
        (tmp_path / f"expand-ratio-h100-2026-03-01{run}.json").write_text(
            json.dumps({"date": "2026-03-01", "rows": [{**row_, "fwd_ms": ms}]}))  # fmt: skip
    path, rows = expand_ratio_benchmark(tmp_path)
    assert path.name == "expand-ratio-h100-2026-03-01-10.json" and [r["fwd_ms"] for r in rows] == [0.125]


def test_the_notebooks_run_top_to_bottom_and_save_their_figures(tmp_path):
    """The committed results (empty study tables: annotated panels) plus synthetic study runs (curves)."""
    pytest.importorskip("nbclient")
    from hgrn.results.notebooks import execute, notebook_paths

    runs = tmp_path / "runs"
    shutil.copytree(REPO / "results" / "runs", runs / "committed")
    write_ablation_runs(runs / "ablation")
    write_mqar_runs(runs / "mqar")
    plots = tmp_path / "plots"
    notebooks = notebook_paths()
    assert {path.stem for path in notebooks} == {"ablation", "mqar", "kernels", "lra"}
    execute(notebooks, {"HGRN_RUNS": str(runs), "HGRN_PLOTS": str(plots)})
    kernels = {"kernel_time_vs_length", "kernel_time_vs_expand_ratio", "kernel_time_expand_ratio_sweep"}
    expected = {"ablation", "mqar", "mqar_state_size", "mqar_train_vs_test", "lra", "lra_curves", *kernels}
    assert {path.stem for path in plots.glob("*.png")} == expected
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in plots.iterdir())
