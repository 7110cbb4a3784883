"""Image features: the frozen ResNet50 encoder, extraction, and the HDF5 store."""
