"""`tfxsp init DATA_DIR --label COL`: look at a folder of CSV files and write tfxsp.toml, every decision the
pipeline would make about them visible and editable: the label and task, each column's role with its reason, the
slices, and what blesses a model."""
from __future__ import annotations

import datetime
import os

import click

from pipeline.cli import exit_codes
from pipeline.cli.options import fail, load, set_option
from pipeline.config import CONFIG_FILE


@click.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--label", required=True, help="The label column's header.")
@click.option("--task", type=click.Choice(["auto", "classification", "regression"]), default="auto",
              show_default=True, help="auto: a string or boolean label, or an integer one with at most 20 values, "
              "is classification; any other label, regression.")
@click.option("--output", "-o", default=CONFIG_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the file.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@set_option
def init(data_dir: str, label: str, task: str, output: str, force: bool, set_items: tuple[str, ...]) -> None:
    """Inspect DATA_DIR's CSV files and write tfxsp.toml for `tfxsp run`."""
    from pipeline.cli import console
    console.quiet_logs(verbose=False)
    if os.path.exists(output) and not force:
        fail("Not written:", f"{output} exists; pass --force to replace it (nothing was changed).")
    config = load(set_items, use_config_file=False, data_root=data_dir, label=label, task=task)
    from pipeline.dataset import analysis, csv_files
    console.console.print(f"Reading {config.data_dir} with TensorFlow Data Validation …")
    try:
        with console.output_to_file(os.path.join(config.pipeline_root, "logs", "dataset.log")):
            found = analysis.analyze(config)
    except csv_files.DataError as e:
        fail("Input error:", str(e), exit_codes.BAD_INPUT)
    from pipeline.cli import dataset_report
    text = render(found, config, data_dir)
    with open(output + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(output + ".tmp", output)
    dataset_report.print_decisions(found, config)
    console.console.print(f"Wrote {os.path.abspath(output)}. Edit it, then run: tfxsp run"
                          + ("" if output == CONFIG_FILE else f" --config {output}"))


def render(found, config, data_dir: str) -> str:
    """tfxsp.toml for the analysis: TOML with a comment for every decision."""
    import tomlkit

    from pipeline.runners import local
    contract = found.contract
    document = tomlkit.document()
    today = datetime.date.today().isoformat()
    document.add(tomlkit.comment(f"tfxsp.toml: the settings of `tfxsp run` for {data_dir}, written by `tfxsp init` "
                                 f"on {today}"))
    document.add(tomlkit.comment(f"from {found.rows} rows in {len(found.layout.files)} file(s). Every decision "
                                 "below follows from the data; edit any of them."))
    document.add(tomlkit.comment("Precedence: these values < TFXSP_* environment variables < --set KEY=VALUE."))
    document.add(tomlkit.nl())
    document.add("data_root", data_dir)
    document.add("label", contract.label.name)
    task = tomlkit.item(contract.task)
    task.comment(f"decided from the label: {contract.label.reason} (auto | classification | regression)")
    document.add("task", task)
    slices = tomlkit.item(list(contract.slice_by))
    slices.comment("the Evaluator reports its metrics per value of these columns too")
    document.add("slice_by", slices)
    document.add(tomlkit.nl())
    thresholds = local.blessing(config, contract)
    document.add(tomlkit.comment(f"A model is blessed (and pushed) when {thresholds.reason}."))
    key = "min_accuracy" if contract.task == "classification" else "max_rmse"
    document.add(tomlkit.comment(f"{key} = {thresholds.bound:.4g}   # uncomment to set the threshold yourself"))
    document.add("baseline_margin", config.baseline_margin)
    if found.unlabelled_rows:
        document.add(tomlkit.comment(f"{found.unlabelled_rows} row(s) have no label: they are left out of training "
                                     "and evaluation."))
    document.add(tomlkit.nl())
    columns = tomlkit.table()
    columns.comment("header = { role = numeric | categorical | ignored }: change a role to override the data's "
                    "decision")
    for column in contract.columns:
        entry = tomlkit.inline_table()
        entry.update({"role": column.role, "reason": column.reason})
        columns.add(column.name, entry)
    document.add("columns", columns)
    return tomlkit.dumps(document)
