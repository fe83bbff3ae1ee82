"""What the pipeline decided about a dataset, as `tfxsp init` and `tfxsp run` show it: the task, each column's
role and why."""
from __future__ import annotations

from pipeline.cli.console import console
from pipeline.cli.tables import Column, e, fitted_table

_ROLE_STYLE = {"numeric": "cyan", "categorical": "magenta", "ignored": "dim", "label": "bold"}


def print_decisions(found, config) -> None:
    contract = found.contract
    rows = [[e(contract.label.name), "[bold]label[/]", e(contract.label.dtype), e(contract.label.reason)]]
    for column in contract.columns:
        style = _ROLE_STYLE.get(column.role, "")
        rows.append([e(column.name), f"[{style}]{column.role}[/]", e(column.dtype), e(column.reason)])
    console.print(fitted_table(
        [Column("Column"), Column("Role"), Column("Type", drop=1), Column("Why", wrap=True)], rows,
        title=f"{e(config.data_dir)}: {found.rows} rows, {contract.task} of '{e(contract.label.name)}'"))
    console.print(one_line(found))


def one_line(found) -> str:
    """The decisions in a sentence, for the run summary."""
    contract = found.contract
    counts = {role: sum(1 for c in contract.columns if c.role == role) for role in ("numeric", "categorical",
                                                                                     "ignored")}
    ignored = ", ".join(f"{c.name} ({c.reason.split(' (')[0].split(':')[0]})" for c in contract.ignored)
    text = (f"[bold]Dataset:[/] {contract.task} of '{e(contract.label.name)}' ({e(contract.label.reason)}) from "
            f"{counts['numeric']} numeric and {counts['categorical']} categorical column(s)")
    if ignored:
        text += f"; ignored: {e(ignored)}"
    if contract.slice_by:
        text += f"; slices: {e(', '.join(contract.slice_by))}"
    if found.unlabelled_rows:
        text += f"; {found.unlabelled_rows} row(s) without a label left out"
    return text
