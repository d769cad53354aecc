"""Benchmarks that print figures: each measures our code and a baseline in the same run
and reports their ratio, so a noisy machine shifts both alike.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> dict``;
``python -m pipeline.bench <name>`` prints the dict as one JSON line.
"""
