"""Orbax checkpoints of a workdir, their integrity, and the one-trainer lock."""
