"""What the features were made with: recorded in the HDF5 file's attributes and in every model file.

Captioning a new image rebuilds the same encoder from it and resizes the image the same way, so the
decoder sees features like those it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from captioning.errors import CaptioningError
from captioning.params import FeaturesParams

# What files written before a field existed held: every features file and model file without `encoder` came from a
# ResNet50, the only encoder there was.
RECORDED_BEFORE = {"encoder": "resnet50"}


@dataclass(frozen=True)
class FeatureRecipe:
    encoder: str  # features.encoder: resnet50, resnet101 or resnet152
    weights: str  # features.weights: none, imagenet or a state dict file
    imagenet_variant: str
    seed: int  # of the random encoder when weights is none
    image_size: int
    precision: str  # resolved: fp32, bf16 or fp16
    encoder_fingerprint: str  # encoder_fingerprint() of the encoder's weights

    @classmethod
    def of(cls, params: FeaturesParams, precision: str, encoder_fingerprint: str) -> FeatureRecipe:
        """The recipe of features extracted with these params, at this (resolved) precision."""
        return cls(
            encoder=params.encoder,
            weights=params.weights,
            imagenet_variant=params.imagenet_variant,
            seed=params.seed,
            image_size=params.image_size,
            precision=precision,
            encoder_fingerprint=encoder_fingerprint,
        )

    @classmethod
    def missing_fields(cls, values: Mapping) -> list[str]:
        names = [field.name for field in dataclasses.fields(cls)]
        return [name for name in names if name not in values and name not in RECORDED_BEFORE]

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "the features file", remedy: str = "") -> FeatureRecipe:
        """From HDF5 attributes or a model file's feature_recipe (numpy scalars accepted, other keys ignored)."""
        missing = cls.missing_fields(values)
        if missing:
            raise CaptioningError(
                f"{source}: does not record the recipe of its features (missing {', '.join(missing)})"
                + (f": {remedy}" if remedy else "")
            )
        values = {**RECORDED_BEFORE, **values}
        return cls(
            encoder=str(values["encoder"]),
            weights=str(values["weights"]),
            imagenet_variant=str(values["imagenet_variant"]),
            seed=int(values["seed"]),
            image_size=int(values["image_size"]),
            precision=str(values["precision"]),
            encoder_fingerprint=str(values["encoder_fingerprint"]),
        )

    def to_dict(self) -> dict[str, str | int]:
        """Plain values in field order (the HDF5 attributes; the model file stores them in name order)."""
        return dataclasses.asdict(self)
