"""The `tfxsp` command line (pipeline/cli/main.py: the group and its commands)."""
