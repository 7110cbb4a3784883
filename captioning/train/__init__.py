"""Training the decoder with cross-entropy (the train stage).

run.py: the stage's body (read the inputs, build the decoder, train, write the model). cross_entropy.py: the
training step and epoch, Eq. 14's loss with the doubly stochastic penalty; hard_attention.py: what hard
attention adds to it (REINFORCE's baseline and entropy terms). epochs.py: the epoch loop every training
shares (Adam, StepLR, the kept epoch, resume after a kill); resume.py: its checkpoints. batching.py: captions
into batches; distributed.py: torchrun's processes. validation.py: the greedy captions that pick the kept epoch.
"""
