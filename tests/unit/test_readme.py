"""The README stays true: its settings table is the declared settings, and its first lines are the two commands."""

from __future__ import annotations

from pathlib import Path

from tools.sync_docs import ROOT, readme_with_table


def test_settings_table_matches_declared_settings() -> None:
    text = (ROOT / "README.md").read_text()
    assert readme_with_table(text) == text, "README settings table is stale: run `make docs`"


def test_every_declared_setting_is_in_the_readme() -> None:
    from filesync.app import all_settings

    text = (ROOT / "README.md").read_text()
    missing = [s.env for s in all_settings() if f"`{s.env}`" not in text]
    assert missing == []


def test_readme_opens_with_demo_and_test_commands() -> None:
    head = Path(ROOT / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)
    makefile = (ROOT / "Makefile").read_text()
    assert "filesync demo" in makefile and "pytest" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
