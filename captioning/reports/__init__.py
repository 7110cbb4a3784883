"""What the evaluate stage writes: evaluation.py (the test split captioned with beam search and scored),
outputs.py (the metrics, intervals, environment and predictions files), figures.py (attention figures) and
gallery.py (the HTML gallery). Only the evaluate stage runs this folder.
"""
