"""phi-forge: Phi checkpoints converted for every runtime, each artifact proven in its own."""
VERSION = "0.2.0"  # recorded in each manifest, commit message and tag of a push
