"""Regenerate the README's settings table and .env.example from the declared settings (`make docs`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from filesync.settings_doc import env_example, markdown_table

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def readme_with_table(text: str) -> str:
    block = f"{START}\n{markdown_table()}{END}"
    return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.DOTALL)


def main() -> int:
    readme = ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text()))
    (ROOT / ".env.example").write_text(env_example())
    return 0


if __name__ == "__main__":
    sys.exit(main())
