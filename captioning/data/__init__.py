"""Datasets: the caption table every stage reads, the generated scenes, image loading."""
