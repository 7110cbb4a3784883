"""The frozen ResNet encoder (50, 101 or 152 layers): an image in, its last convolutional map (2048 x 7 x 7) out.

The three share the output stride (32) and width (2048), so everything after the features stage is the same for
each; ResNet-101 is what most published Flickr30k and COCO numbers use, ResNet50 is the default.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from captioning.errors import CaptioningError
from captioning.io import UnloadableFile, load_plain
from captioning.params import ENCODERS, IMAGENET_VARIANTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 2048
# A random ResNet's residual stream grows with depth (its BatchNorm layers hold no learned statistics): on the scenes
# ResNet50's map reaches about 2^7, ResNet101's 2^17 to 2^18 and ResNet152's 2^27 to 2^30 (seeds 0-2), past the
# 65,504 (~2^16) of the float16 the features are stored in. A power of two brings the deeper ones back to ResNet50's
# range without rounding; the decoder standardises every channel with training statistics, so nothing else changes.
RANDOM_WEIGHTS_SCALE = {"resnet50": 1.0, "resnet101": 2.0**-10, "resnet152": 2.0**-21}


class FrozenEncoder(nn.Module):
    """A ResNet without avgpool and fc; takes uint8 images, normalises them itself, never trains."""

    def __init__(self, resnet: torchvision.models.ResNet, output_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(*list(resnet.children())[:-2])
        self.output_scale = output_scale  # RANDOM_WEIGHTS_SCALE; not a buffer, so the fingerprint is the weights'.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)  # batch-norm statistics stay frozen whatever the caller asks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, H, W) uint8 -> (B, H/32 * W/32, 2048) region features
        pixels = (images.float() - self.mean) / self.std
        feature_map = self.body(pixels.contiguous(memory_format=torch.channels_last))  # (B, 2048, 7, 7)
        if self.output_scale != 1.0:
            feature_map = feature_map * self.output_scale
        return feature_map.flatten(2).transpose(1, 2)  # (B, 49, 2048)


def display_name(encoder: str) -> str:
    """resnet101 -> ResNet101, as the log lines and messages write it."""
    return encoder.replace("resnet", "ResNet")


def _weights_enum(encoder: str):
    return torchvision.models.get_model_weights(encoder)  # ResNet50_Weights, ResNet101_Weights, ...


def _checkpoint_hint(encoder: str, variant: str) -> str:
    filename = Path(_weights_enum(encoder)[variant].url).name
    hub = Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache
    return (
        f"copy {filename} to {hub / filename}, or set features.weights to the path of a local "
        f"{display_name(encoder)} state dict (.pth)"
    )


def load_state_dict(path: str | Path, encoder: str = "resnet50") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(
            f"features.weights: {path} not found (expected a {display_name(encoder)} state dict .pth)"
        )
    try:
        state = load_plain(path)
    except UnloadableFile as refused:
        message = refused.reason if refused.pickled else f"not a loadable state dict ({refused.reason})"
        raise CaptioningError(f"features.weights: {path} is {message}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CaptioningError(f"features.weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def build_resnet(
    weights: str, seed: int = 0, imagenet_variant: str = "IMAGENET1K_V2", encoder: str = "resnet50"
) -> torchvision.models.ResNet:
    """`none`: seeded random weights; `imagenet`: torchvision's; anything else: a local state-dict path."""
    if encoder not in ENCODERS:  # params.py checks params.yaml; this, a model file's recipe
        raise CaptioningError(f"features.encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    architecture = getattr(torchvision.models, encoder)
    if weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return architecture(weights=None)
    if weights == "imagenet":
        if imagenet_variant not in IMAGENET_VARIANTS:
            raise CaptioningError(
                f"features.imagenet_variant must be one of {', '.join(IMAGENET_VARIANTS)}, got {imagenet_variant!r}"
            )
        try:
            return architecture(weights=_weights_enum(encoder)[imagenet_variant])
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise CaptioningError(
                f"cannot download the ImageNet {display_name(encoder)} weights ({error}); "
                f"{_checkpoint_hint(encoder, imagenet_variant)}"
            ) from None
    model = architecture(weights=None)
    state = load_state_dict(weights, encoder)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            details.append(f"{k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}")
        raise CaptioningError(
            f"features.weights: {weights} is not a torchvision {display_name(encoder)} state dict: {'; '.join(details)}"
        )
    model.load_state_dict(state)
    return model


def build_encoder(
    weights: str, seed: int = 0, imagenet_variant: str = "IMAGENET1K_V2", encoder: str = "resnet50"
) -> FrozenEncoder:
    resnet = build_resnet(weights, seed, imagenet_variant, encoder)
    return FrozenEncoder(resnet, RANDOM_WEIGHTS_SCALE[encoder] if weights == "none" else 1.0)
