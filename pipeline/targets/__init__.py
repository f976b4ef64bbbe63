"""One builder per target: `python -m pipeline.targets.<target> --help`."""
