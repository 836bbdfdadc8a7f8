"""Result tables, printed as plain text (and as Markdown for bench/README.md with --markdown)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])
        print(f"  {self.title}: " + ", ".join(f"{h}={c}" for h, c in zip(self.headers, self.rows[-1], strict=True)),
              flush=True)


def text(table: Table) -> str:
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h)
              for i, h in enumerate(table.headers)]
    line = "  ".join("-" * w for w in widths)
    out = [table.title, line, "  ".join(h.ljust(w) for h, w in zip(table.headers, widths, strict=True)), line]
    out += ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=True))
            for r in table.rows]
    out += [line, *(f"  {n}" for n in table.notes)]
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    return cell.lstrip("+-").replace(",", "").replace(".", "", 1).isdigit()


def markdown(table: Table) -> str:
    out = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |",
           "|" + "|".join("---:" for _ in table.headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in table.rows]
    if table.notes:
        out += ["", *(f"- {n}" for n in table.notes)]
    return "\n".join(out)


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.0f}"


def emit(scenario: str, **fields: object) -> dict[str, object]:
    """One JSON line for a measured case, printed as it is measured (the tables come at the end)."""
    line: dict[str, object] = {"scenario": scenario, **fields}
    print(json.dumps(line, default=str), flush=True)
    return line


def ratio(value: float | None, base: float | None) -> str:
    """`value` as a multiple of `base` (e.g. filesync's MB/s over the raw loop's), or '-'."""
    if not value or not base:
        return "-"
    return f"{value / base:.2f}"
