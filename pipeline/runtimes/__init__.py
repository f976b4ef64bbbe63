"""One adapter per runtime: `open(folder, facts, spec) -> pipeline.validate.Runtime`, imported by name."""
