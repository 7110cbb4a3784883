"""Readers of the real datasets' downloads; `dataset.read_dataset` turns one into the caption table."""
