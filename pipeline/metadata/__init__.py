"""ML Metadata for people and scripts: opening the store (store.py), runs (runs.py, report.py), artifacts, pushed
models, lineage tracing (lineage.py), and pictures of it (render/). Reading only: TFX's runners write the store."""
