"""Draws bench/results.png from the result tables in the benchmark READMEs.

The chart shows what the tables say, nothing else: for each scenario, ferroloop's and
asyncio's throughput as a ratio to uvloop measured in the same run. It reads every
Markdown table whose header has loop columns (`asyncio`, `uvloop`, `ferroloop`) and whose
cells carry a `(ratio)` after the figure, plus the core table's `ferroloop/uvloop` and
`asyncio/uvloop` columns.

    .venv/bin/python bench/chart.py   # needs matplotlib; tools/dev.py bench installs it
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "README.md", HERE / "net" / "README.md"]
OUTPUT = HERE / "results.png"
LOOPS = ("ferroloop", "asyncio")
RATIO_IN_CELL = re.compile(
    r"\(([0-9.]+)\)"
)  # throughput cells: "47.2k (1.26)"; CPU tables use "(1.3x)"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _ratio(cell: str) -> float | None:
    match = RATIO_IN_CELL.search(cell)
    if match:
        return float(match.group(1))
    plain = re.fullmatch(r"([0-9.]+)x", cell.strip())
    return float(plain.group(1)) if plain else None


def read_tables(path: Path):
    """(scenario, {loop: ratio to uvloop}) rows from the throughput tables of `path`."""
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or i + 1 >= len(lines) or "---" not in lines[i + 1]:
            continue
        header = [h.lower() for h in _cells(line)]
        columns = {}
        for loop in LOOPS:
            for name in (loop, f"{loop}/uvloop"):
                if name in header:
                    columns[loop] = header.index(name)
        if "uvloop" not in header and "ferroloop/uvloop" not in header:
            continue
        if not columns:
            continue
        for body in lines[i + 2 :]:
            if not body.startswith("|"):
                break
            cells = _cells(body)
            if not cells or cells[0].startswith("-") or cells[0] in ("geomean", ""):
                continue
            ratios = {loop: _ratio(cells[col]) for loop, col in columns.items() if col < len(cells)}
            if ratios.get("ferroloop") is not None:
                rows.append((cells[0], ratios))
    return rows


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for source in SOURCES if source.exists() for row in read_tables(source)]
    if not rows:
        raise SystemExit("no result tables found")
    names = [name for name, _ in rows]
    height = max(4.0, 0.32 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(9, height))
    positions = range(len(rows))
    for offset, loop, color in ((-0.2, "ferroloop", "#c0392b"), (0.2, "asyncio", "#7f8c8d")):
        values = [ratios.get(loop) or 0.0 for _, ratios in rows]
        ax.barh([p + offset for p in positions], values, height=0.38, label=loop, color=color)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--", label="uvloop = 1.0")
    ax.set_yticks(list(positions))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("throughput relative to uvloop, same run (higher is better)")
    ax.set_title("ferroloop vs asyncio, as ratios to uvloop (2 shared cores: compare ratios)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTPUT, dpi=110)
    print(f"wrote {OUTPUT.relative_to(HERE.parent)} ({len(rows)} scenarios)")


if __name__ == "__main__":
    main()
