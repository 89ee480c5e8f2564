"""Comparison studies: typed definitions, the runner that executes them, and their results."""
