"""``python -m serving``: run the embedded TF Serving-compatible model server (see serving.cli)."""
import sys

from serving.cli import main

sys.exit(main())
