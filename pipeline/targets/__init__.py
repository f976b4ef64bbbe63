"""One build module per target: `python -m pipeline.targets.<target>` turns a checkpoint into its artifacts."""
