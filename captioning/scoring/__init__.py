"""Scoring captions the way the literature does: metrics.py (pycocoevalcap's BLEU-1..4, METEOR 1.5, ROUGE-L,
CIDEr, with per-image statistics kept), statistics.py (corpus scores of any resample from those statistics),
significance.py (bootstrap intervals and randomisation tests), grounding.py (object accuracy and attention
grounding on the generated scenes), split.py (a split's images captioned once).

Validation during training uses metrics, statistics and split only: the train and finetune stages depend on
those files, so editing grounding or significance reruns only the evaluate stage.
"""
