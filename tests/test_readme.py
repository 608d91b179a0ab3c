"""The README carries the deviations table of conf/DEVIATIONS.md word for word, so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_embeds_every_row_of_the_deviations_table():
    rows = [line for line in (ROOT / "conf" / "DEVIATIONS.md").read_text().splitlines() if line.startswith("| ")]
    readme = (ROOT / "README.md").read_text()
    assert len(rows) > 10
    assert [row for row in rows if row not in readme] == []
