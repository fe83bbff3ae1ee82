"""`tfxsp artifacts [--type T]`: artifacts recorded in ML Metadata, or how many of each type."""
from __future__ import annotations

import click

from pipeline.cli import console
from pipeline.cli.options import echo_json, guarded, metadata_options, open_metadata
from pipeline.cli.tables import Column, e, fitted_table, short, when


@click.command()
@metadata_options()
@click.option("--type", "type_name", default=None, metavar="T",
              help="Artifact type (Model, Examples, PushedModel, ...; case-insensitive). "
                   "Without it: how many artifacts of each type.")
@click.option("--limit", default=50, show_default=True, help="The newest N; 0 = all.")
def artifacts(set_items: tuple[str, ...], metadata_url: str | None,
              output_format: str | None, type_name: str | None, limit: int) -> None:
    """Artifacts of a type, newest first, with key properties and the run that produced them."""
    from pipeline.metadata import artifacts as api
    from pipeline.metadata.properties import key_properties
    output_format = output_format or "table"
    _, store, where = open_metadata(set_items, metadata_url)
    if type_name is None:
        counts = guarded(lambda: api.artifact_type_counts(store))
        if output_format == "json":
            echo_json({"store": where, "types": counts})
            return
        console.console.print(fitted_table([Column("Type"), Column("Artifacts", justify="right")],
                                           [[e(name), str(count)] for name, count in counts.items()],
                                           title="Artifact types", caption=f"store: {e(where)}"))
        console.console.print("[dim]tfxsp artifacts --type T lists the artifacts of a type.[/]")
        return
    found = guarded(lambda: api.list_artifacts(store, type_name, limit or None))
    if output_format == "json":
        echo_json({"store": where, "artifacts": [a.to_dict() for a in found]})
        return
    name = found[0].type if found else type_name
    columns = [Column("Id", justify="right"), Column("Created", wrap=True), Column("Key properties", wrap=True),
               Column("Produced by", wrap=True), Column("Run", wrap=True, drop=1), Column("URI", wrap=True, drop=2)]
    rows = []
    for a in found:
        producer = a.producer or {}
        by = f"{producer.get('node_id', '')} (exec {producer.get('execution_id')})" if producer else ""
        if producer.get("reused_by"):
            by += f", reused by {producer['reused_by']} cached run(s)"
        props = "\n".join(f"{k}={short(v)}" for k, v in key_properties(a.type, a.properties).items())
        rows.append([str(a.id), when(a.created_ms), e(props), e(by), e(producer.get("run_id") or ""), e(a.uri)])
    console.console.print(fitted_table(columns, rows, title=f"{e(name)} artifacts (newest first)",
                                       caption=f"store: {e(where)}"))
    if not found:
        console.console.print(f"No {e(name)} artifacts.")
