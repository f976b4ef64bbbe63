"""The runtime interface every adapter implements (base.py), and transformers as a runtime of its own (pytorch.py),
which validates the validator on a checkpoint itself. Each target's adapter is pipeline/targets/<target>/runtime.py."""
