"""After the push: which pushed version serves, through TF Serving's model config file (labels, pins, rollbacks)."""
