"""``python -m serving``: run the embedded TF Serving-compatible model server (see serving.cli)."""
import os
import sys

from serving.cli import main

status = main()
# The server has shut down cleanly by now (ports closed, sessions released); skip the interpreter's
# teardown of TensorFlow, which takes over a second and would only delay the exit status.
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
