"""The DVC stages' entry points (dvc.yaml): one module per stage, each parsing its params and calling captioning."""
