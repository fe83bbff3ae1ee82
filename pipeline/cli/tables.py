"""How the metadata commands show values in their tables: durations, times, states, yes/no, long values."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from rich import box
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

STATE_STYLE = {"complete": "green", "cached": "blue", "failed": "bold red", "running": "yellow",
               "abandoned": "magenta", "passed": "green", "skipped": "dim", "inconclusive": "yellow"}


def e(value: Any) -> str:
    """Data shown in a rich table or line: [brackets] in it are text, not markup."""
    return escape(str(value))


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    return f"{minutes} m {secs:02d} s"


def when(ms: int) -> str:
    from pipeline.metadata.properties import iso
    return (iso(ms) or "").replace("T", " ")


def styled(state: str | None) -> str:
    if not state:
        return ""
    return f"[{STATE_STYLE.get(state, 'yellow')}]{state}[/]"


def yes_no(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    if value is None:
        return ""
    return f"[green]{yes}[/]" if value else f"[bold red]{no}[/]"


def short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 1] + "…"


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of a listing. `wrap`: its cells may break onto several lines (else they never do, and the column is
    as wide as its widest cell). `drop`: the order in which columns are left out when the terminal is too narrow for
    all of them (1 first; None: always shown)."""
    header: str
    justify: str = "left"
    wrap: bool = False
    drop: int | None = None


def fitted_table(columns: list[Column], rows: list[list[str]], *, title: str, caption: str = "",
                 width: int | None = None) -> Table:
    """A table whose headers and cells are never cut: at a width where not every column fits (an 80-column
    terminal, a pipe), cells wrap where they may, then the columns that matter least are left out, and the caption
    says which (`--format json` has them all)."""
    from pipeline.cli.console import console
    width = width or console.width
    shown = list(range(len(columns)))
    while True:
        table = _table([columns[i] for i in shown], [[row[i] for i in shown] for row in rows], title, caption,
                       [columns[i].header for i in range(len(columns)) if i not in shown])
        droppable = [i for i in shown if columns[i].drop is not None]
        # Measured without a width limit: a table's measurement is clipped to the width it is given.
        if Measurement.get(console, console.options.update(width=10**6), table).minimum <= width or not droppable:
            return table
        shown.remove(min(droppable, key=lambda i: columns[i].drop))


def _table(columns: list[Column], rows: list[list[str]], title: str, caption: str, hidden: list[str]) -> Table:
    if hidden:
        caption = (caption + "\n" if caption else "") + \
            f"Not shown at this width: {', '.join(hidden)} (a wider terminal or --format json shows them)."
    table = Table(title=title, title_justify="left", caption=caption or None, caption_justify="left",
                  box=box.SIMPLE_HEAD)
    for i, column in enumerate(columns):
        # A header may break between words, never inside one; a cell that may not wrap sets its column's width.
        widest = max((Text.from_markup(row[i]).cell_len for row in rows), default=0)
        header = max(len(word) for word in column.header.split())
        table.add_column(column.header, justify=column.justify, no_wrap=not column.wrap,
                         overflow="fold" if column.wrap else "ignore",
                         min_width=header if column.wrap else max(header, widest))
    for row in rows:
        table.add_row(*row)
    return table
