"""Pretrained weights (--config.init_from): name_maps.py (PyTorch names and layouts -> our trees), source.py (what init_from names), importer.py (a new training state from them)."""
