"""Show, Attend and Tell image captioning (Xu et al. 2015) as a reproducible DVC pipeline.

The package reads like the paper: data -> text -> features -> embeddings -> model -> decoding ->
training -> metrics -> figures. The model itself is in captioning/model/paper.py.
"""
