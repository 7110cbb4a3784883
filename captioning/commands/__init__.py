"""The commands of `python -m captioning` (captioning/__main__.py): caption.py (caption images with a trained
model), compare.py (two runs' test scores with intervals and p-values), download.py (Flickr30k or Flickr8k
from a public mirror), remote.py (why a dvc push or pull failed).
"""
