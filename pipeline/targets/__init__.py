"""One builder per target: `python -m pipeline.targets.<target>` turns a checkpoint into that target's artifacts."""
