"""The HTML report of a skew check (Jinja2): each feature's distance, threshold and verdict, and TFDV's own
side-by-side view of the training and serving statistics (Facets Overview) below it."""
from __future__ import annotations

import datetime
import os
from typing import Any

import jinja2

from pipeline.monitoring.skew import SkewResult

_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ model }} version {{ version }}: served requests vs training data</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; } td, th { padding: 4px 12px; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.skewed { color: #b00020; font-weight: bold; } .ok { color: #1b5e20; }
</style></head><body>
<h1>{{ model }} version {{ version }}: served requests vs training data</h1>
<p>{{ requests }} logged examples from {{ files }} file(s) under <code>{{ logs }}</code>, compared on {{ when }} with
the training statistics (StatisticsGen #{{ statistics_id }}, train split) and schema (SchemaGen #{{ schema_id }})
of PushedModel #{{ pushed_model_id }}.</p>
<p class="{{ 'skewed' if flagged else 'ok' }}">{% if flagged %}{{ flagged|length }} feature(s) over their
threshold: {{ flagged|join(', ') }}{% else %}No feature over its threshold.{% endif %}</p>
<table><tr><th>feature</th><th>measure</th><th>distance</th><th>threshold</th><th>verdict</th></tr>
{% for f in features %}<tr><td>{{ f.name }}</td><td>{{ f.measure }}</td>
<td class="num">{{ '%.4f'|format(f.distance) if f.distance is not none else '–' }}</td>
<td class="num">{{ '%.4f'|format(f.threshold) }}</td>
<td class="{{ 'skewed' if f.flagged else 'ok' }}">{{ f.verdict }}</td></tr>
{% endfor %}</table>
{% if other_anomalies %}<h2>Other anomalies TFDV found</h2><ul>
{% for name, text in other_anomalies %}<li><b>{{ name }}</b>: {{ text }}</li>{% endfor %}</ul>{% endif %}
<h2>Statistics: training (left) and served requests (right)</h2>
{{ facets|safe }}
</body></html>
""")


def write_html(path: str, result: SkewResult, *, model: str, version: int, logs: str, files: int,
               pushed_model_id: int, statistics_id: int, schema_id: int) -> str:
    html = _TEMPLATE.render(
        model=model, version=version, logs=logs, files=files, requests=result.requests,
        when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        pushed_model_id=pushed_model_id, statistics_id=statistics_id, schema_id=schema_id,
        features=result.features, flagged=[f.name for f in result.flagged],
        other_anomalies=other_anomalies(result), facets=_facets(result))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(html)
    return path


def other_anomalies(result: SkewResult) -> list[tuple[str, str]]:
    """TFDV's anomalies besides the skew comparisons (e.g. a value outside the schema's domain)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    comparisons = {anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
                   anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH}
    found = []
    for name, info in sorted(result.anomalies.anomaly_info.items()):
        reasons = [r for r in info.reason if r.type not in comparisons]
        if reasons:
            found.append((name, "; ".join(r.description or r.short_description for r in reasons)))
    return found


def _facets(result: SkewResult) -> Any:
    try:
        from tensorflow_data_validation.utils import display_util
        return display_util.get_statistics_html(result.training_statistics, result.serving_statistics,
                                                lhs_name="training", rhs_name="served requests")
    except Exception as e:  # the view is a help, not the report: never fail the check for it
        return jinja2.Markup(f"<p>(TFDV's statistics view is not available: {jinja2.escape(str(e))})</p>") \
            if hasattr(jinja2, "Markup") else f"(TFDV's statistics view is not available: {e})"
