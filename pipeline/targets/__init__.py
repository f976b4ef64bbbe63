"""One package per target: build.py (`build(checkpoint, spec, facts, out, base, threads)`), runtime.py (the
validator's adapter, `open(folder, checkpoint, facts, spec, threads)`), bench.py (against the tool run by hand),
and what only that target needs."""
