"""Watching the served model (`tfxsp monitor`): the requests TF Serving logged (request_logs.py), the training data
they are compared with, found through ML Metadata lineage (training_data.py), TFDV's skew comparison (skew.py), the
HTML report (report.py) and the record of the result in ML Metadata (record.py)."""
