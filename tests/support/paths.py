"""Where things are: the repository, its bundled data, the installed `tfxsp` command."""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PENGUINS_DIR = REPO_ROOT / "data" / "penguins"
TFXSP = str(Path(sys.executable).with_name("tfxsp"))
