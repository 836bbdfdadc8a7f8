"""The shape of the package, checked (issue 8): every module imports on its own in a fresh interpreter, in
any order, and every named query says what it does. The layer contracts run in `make test` (lint-imports)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import filesync
from filesync.ledger.sql import raw_queries

PACKAGE = Path(filesync.__file__).parent


def modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [m for m in found if m != "filesync.__main__"]


def _imports(order: list[str]) -> subprocess.CompletedProcess[str]:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    return subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=120)


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    names = modules()
    assert len(names) > 40
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(names, pool.map(lambda n: _imports([n]), names), strict=True))
    broken = {name: r.stderr.strip().splitlines()[-1] for name, r in results.items() if r.returncode != 0}
    assert not broken, broken


def test_every_module_imports_in_shuffled_orders() -> None:
    names = modules()
    for seed in range(3):
        order = names[:]
        random.Random(seed).shuffle(order)
        result = _imports(order)
        assert result.returncode == 0, result.stderr


def test_every_named_query_says_what_it_does() -> None:
    text = (PACKAGE / "ledger" / "queries.sql").read_text()
    undocumented = [name for name, following in re.findall(r"^-- name: (\w+)\n(.*)$", text, re.MULTILINE)
                    if not following.startswith("-- ")]
    assert not undocumented
    assert set(raw_queries()) == set(re.findall(r"^-- name: (\w+)$", text, re.MULTILINE))


def test_the_settings_order_does_not_depend_on_import_order() -> None:
    """The README table and .env.example come from it: any test order must produce the same."""
    code = "from filesync.app import all_settings; print([s.env for s in all_settings()])"
    orders = ["", "import filesync.transforms, filesync.stats, filesync.alerts; ",
              "import filesync.stats, filesync.logs, filesync.schedule; "]
    outputs = {subprocess.run([sys.executable, "-c", first + code], capture_output=True, text=True,
                              timeout=120, check=True).stdout for first in orders}
    assert len(outputs) == 1
