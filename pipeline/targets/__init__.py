"""Builders, one per target: `python -m pipeline.targets.<target> --help`."""
