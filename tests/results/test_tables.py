"""The LRA table is rendered from results.json files only, beside the paper's numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hgrn.results import write_results
from hgrn.results.tables import collect, main
from tests.results.test_schema import example


def write_run(root, name, experiment, acc, finished, epochs=50):
    result = replace(
        example(),
        experiment=experiment,
        metrics={"test/acc": acc},
        finished_at=finished,
        epochs=epochs,
        config={"trainer": {"max_epochs": 50}},
    )
    write_results(root / name / "results.json", result)


def test_latest_run_per_experiment_wins_and_partial_runs_are_marked(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "a", "lra/hgrn2/listops", 0.40, "2026-01-01T00:00:00")
    write_run(runs, "b", "lra/hgrn2/listops", 0.55, "2026-01-02T00:00:00")
    write_run(runs, "c", "lra/hgrn2/text", 0.70, "2026-01-02T00:00:00", epochs=3)
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text("{}")
    assert collect([runs])["lra/hgrn2/listops"].metrics["test/acc"] == 0.55
    main(["lra", "--runs", str(runs), "--out", str(tmp_path / "tables")])
    table = (tmp_path / "tables" / "lra.md").read_text()
    assert "| hgrn2 | ours | 55.00 | 70.00* | - | - | - | - | - |" in table
    assert "| hgrn2 | paper | 60.52 | 88.97 | 95.07 | 89.33 | 93.95 | 98.12 | 87.66 |" in table
    assert "skipping" in capsys.readouterr().out
    assert (tmp_path / "tables" / "lra.csv").read_text().startswith("model,source,listops")


def test_a_runs_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lra", "--runs", str(tmp_path / "absent"), "--out", str(tmp_path / "tables")])
    assert exit_info.value.code == 2
    assert "absent: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()
