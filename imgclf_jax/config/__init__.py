"""The config: every key with its default (keys.py), checked and resolved once (resolve.py)."""
