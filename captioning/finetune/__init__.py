"""Self-critical sequence training (Rennie et al. 2017), the finetune stage: scst.py (sampled captions rewarded
by CIDEr-D against a greedy or mean baseline), cider.py (CIDEr-D with the training references' document
frequencies, the reward) and run.py (the stage's body, on the epoch loop of captioning.train.epochs).
"""
