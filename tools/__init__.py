"""Developer harnesses that tests and benchmarks share (not installed with the package)."""
