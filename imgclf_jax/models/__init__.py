"""The model architectures, chosen by name (registry.py)."""
