"""Image features: the frozen ResNet encoder, extraction, and the HDF5 store."""
