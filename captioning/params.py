"""params.yaml, one dataclass per stage, validated once when a stage starts.

Every check raises ParamError with the key and the allowed values, so a typo in
`dvc exp run -S train.lr=-1` stops the stage with one clear line.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from captioning.errors import CaptioningError, ParamError

DATASETS = ("scenes", "flickr30k", "flickr8k", "coco")
# The annotation formats each real dataset can be read from (data.format; `auto` detects them).
DATASET_FORMATS = {
    "flickr30k": ("karpathy", "hf_csv", "kaggle_csv", "token"),
    "flickr8k": ("karpathy", "flickr8k_token", "flickr8k_csv"),
    "coco": ("karpathy",),
}
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
BAD_IMAGE_POLICIES = ("skip", "error")
SELECT_BY = ("bleu_4", "cider", "meteor", "rouge_l")
ATTENTION_KINDS = ("soft", "none")
IMPLEMENTATIONS = ("auto", "paper", "fast")
SCST_BASELINES = ("greedy", "mean")


def require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ParamError(key, allowed, got)


@dataclass(frozen=True)
class DataParams:
    dataset: str = "scenes"
    root: str = ""
    format: str = "auto"
    seed: int = 0
    num_train: int = 2000
    num_val: int = 200
    num_test: int = 200
    image_size: int = 224
    min_objects: int = 1
    max_objects: int = 2
    captions_per_image: int = 5
    on_bad_image: str = "skip"

    def check(self) -> None:
        require(self.dataset in DATASETS, "data.dataset", f"one of {', '.join(DATASETS)}", self.dataset)
        if self.dataset in DATASET_FORMATS:
            formats = ("auto",) + DATASET_FORMATS[self.dataset]
            require(self.format in formats, "data.format", f"one of {', '.join(formats)}", self.format)
            require(bool(self.root), "data.root", f"the folder holding the {self.dataset} download", self.root)
        for name in ("num_train", "num_val", "num_test"):
            require(getattr(self, name) >= 1, f"data.{name}", "an integer >= 1", getattr(self, name))
        require(self.image_size >= 32, "data.image_size", "an integer >= 32", self.image_size)
        require(1 <= self.min_objects <= 9, "data.min_objects", "an integer from 1 to 9", self.min_objects)
        require(
            self.min_objects <= self.max_objects <= 9,
            "data.max_objects",
            f"an integer from data.min_objects ({self.min_objects}) to 9",
            self.max_objects,
        )
        require(self.captions_per_image >= 1, "data.captions_per_image", "an integer >= 1", self.captions_per_image)
        require(
            self.on_bad_image in BAD_IMAGE_POLICIES,
            "data.on_bad_image",
            f"one of {', '.join(BAD_IMAGE_POLICIES)}",
            self.on_bad_image,
        )


@dataclass(frozen=True)
class VocabParams:
    min_word_freq: int = 1
    max_len: int = 20

    def check(self) -> None:
        require(self.min_word_freq >= 1, "vocab.min_word_freq", "an integer >= 1", self.min_word_freq)
        require(self.max_len >= 1, "vocab.max_len", "an integer >= 1", self.max_len)


@dataclass(frozen=True)
class FeaturesParams:
    weights: str = "none"
    imagenet_variant: str = "IMAGENET1K_V2"
    seed: int = 0
    image_size: int = 224
    batch_size: int = 32
    precision: str = "auto"
    num_workers: int = 1
    chunk_size: int = 256
    nproc: int = 1

    def check(self) -> None:
        require(
            self.weights in ("none", "imagenet") or self.weights.endswith((".pth", ".pt")),
            "features.weights",
            "none, imagenet or the path of a .pth/.pt state dict",
            self.weights,
        )
        variants = ("IMAGENET1K_V1", "IMAGENET1K_V2")
        require(
            self.imagenet_variant in variants,
            "features.imagenet_variant",
            f"one of {', '.join(variants)}",
            self.imagenet_variant,
        )
        require(self.image_size >= 32, "features.image_size", "an integer >= 32", self.image_size)
        require(self.batch_size >= 1, "features.batch_size", "an integer >= 1", self.batch_size)
        require(self.precision in PRECISIONS, "features.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        require(self.num_workers >= 0, "features.num_workers", "an integer >= 0", self.num_workers)
        require(self.chunk_size >= 1, "features.chunk_size", "an integer >= 1", self.chunk_size)
        require(self.nproc >= 1, "features.nproc", "an integer >= 1", self.nproc)


@dataclass(frozen=True)
class EmbeddingsParams:
    dim: int = 128
    word2vec_path: str = ""
    limit: int = 0
    window: int = 5
    epochs: int = 20
    seed: int = 0
    finetune: bool = True

    def check(self) -> None:
        require(self.dim >= 1, "embeddings.dim", "an integer >= 1", self.dim)
        require(self.limit >= 0, "embeddings.limit", "an integer >= 0 (0 = no limit)", self.limit)
        require(self.window >= 1, "embeddings.window", "an integer >= 1", self.window)
        require(self.epochs >= 1, "embeddings.epochs", "an integer >= 1", self.epochs)


@dataclass(frozen=True)
class ModelParams:
    attention: str = "soft"
    attention_dim: int = 512
    decoder_dim: int = 512
    dropout: float = 0.5
    deep_output: bool = False
    implementation: str = "auto"

    def check(self) -> None:
        require(
            self.implementation in IMPLEMENTATIONS,
            "model.implementation",
            f"one of {', '.join(IMPLEMENTATIONS)}",
            self.implementation,
        )
        require(
            self.attention in ATTENTION_KINDS, "model.attention", f"one of {', '.join(ATTENTION_KINDS)}", self.attention
        )
        require(self.attention_dim >= 1, "model.attention_dim", "an integer >= 1", self.attention_dim)
        require(self.decoder_dim >= 1, "model.decoder_dim", "an integer >= 1", self.decoder_dim)
        require(0 <= self.dropout < 1, "model.dropout", "a number in [0, 1)", self.dropout)


@dataclass(frozen=True)
class TrainParams:
    lr: float = 4e-4
    epochs: int = 10
    batch_size: int = 64
    step_size: int = 4
    gamma: float = 0.5
    seed: int = 0
    grad_clip: float = 5.0
    alpha_c: float = 1.0
    select_by: str = "bleu_4"
    precision: str = "auto"
    val_max_len: int = 30
    feature_memory_gb: float = 8.0
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        require(math.isfinite(self.lr) and self.lr > 0, "train.lr", "a number > 0", self.lr)
        require(self.epochs >= 1, "train.epochs", "an integer >= 1", self.epochs)
        require(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        require(self.step_size >= 1, "train.step_size", "an integer >= 1", self.step_size)
        require(0 < self.gamma <= 1, "train.gamma", "a number in (0, 1]", self.gamma)
        require(self.grad_clip > 0, "train.grad_clip", "a number > 0", self.grad_clip)
        require(self.alpha_c >= 0, "train.alpha_c", "a number >= 0", self.alpha_c)
        require(self.select_by in SELECT_BY, "train.select_by", f"one of {', '.join(SELECT_BY)}", self.select_by)
        require(self.precision in PRECISIONS, "train.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        require(self.val_max_len >= 1, "train.val_max_len", "an integer >= 1", self.val_max_len)
        require(self.feature_memory_gb >= 0, "train.feature_memory_gb", "a number >= 0", self.feature_memory_gb)
        require(self.nproc_per_node >= 1, "train.nproc_per_node", "an integer >= 1", self.nproc_per_node)
        require(self.nnodes >= 1, "train.nnodes", "an integer >= 1", self.nnodes)
        last_node = self.nnodes - 1
        require(
            0 <= self.node_rank <= last_node, "train.node_rank", f"an integer from 0 to {last_node}", self.node_rank
        )
        require(bool(self.master_addr), "train.master_addr", "the address of node_rank 0", self.master_addr)
        require(1 <= self.master_port <= 65535, "train.master_port", "a port number (1-65535)", self.master_port)
        require(
            self.batch_size >= self.world_size,
            "train.batch_size",
            f"at least nproc_per_node * nnodes ({self.world_size}): it is the global batch, split among the processes",
            self.batch_size,
        )


@dataclass(frozen=True)
class EvaluateParams:
    beam_size: int = 5
    max_len: int = 30
    length_penalty: float = 1.0
    batch_size: int = 50
    figures: int = 4  # attention figures for the first N test images (reports/attention)
    gallery_images: int = 100  # test images in reports/gallery.html

    def check(self) -> None:
        require(self.beam_size >= 1, "evaluate.beam_size", "an integer >= 1", self.beam_size)
        require(self.max_len >= 1, "evaluate.max_len", "an integer >= 1", self.max_len)
        require(self.length_penalty >= 0, "evaluate.length_penalty", "a number >= 0", self.length_penalty)
        require(self.batch_size >= 1, "evaluate.batch_size", "an integer >= 1", self.batch_size)
        require(self.figures >= 0, "evaluate.figures", "an integer >= 0", self.figures)
        require(self.gallery_images >= 0, "evaluate.gallery_images", "an integer >= 0", self.gallery_images)


@dataclass(frozen=True)
class ScstParams:
    epochs: int = 0
    lr: float = 5e-5
    samples: int = 5
    baseline: str = "greedy"
    max_len: int = 24
    batch_size: int = 50
    seed: int = 0
    step_size: int = 10
    gamma: float = 0.5

    def check(self) -> None:
        require(
            self.epochs >= 0, "scst.epochs", "an integer >= 0 (0 passes the cross-entropy model through)", self.epochs
        )
        require(math.isfinite(self.lr) and self.lr > 0, "scst.lr", "a number > 0", self.lr)
        require(self.baseline in SCST_BASELINES, "scst.baseline", f"one of {', '.join(SCST_BASELINES)}", self.baseline)
        fewest = 2 if self.baseline == "mean" else 1
        require(
            self.samples >= fewest,
            "scst.samples",
            f"an integer >= {fewest}" + (" (the mean baseline averages the other samples)" if fewest == 2 else ""),
            self.samples,
        )
        require(self.max_len >= 1, "scst.max_len", "an integer >= 1", self.max_len)
        require(self.batch_size >= 1, "scst.batch_size", "an integer >= 1 (images per batch)", self.batch_size)
        require(self.step_size >= 1, "scst.step_size", "an integer >= 1", self.step_size)
        require(0 < self.gamma <= 1, "scst.gamma", "a number in (0, 1]", self.gamma)


SECTIONS = {
    "data": DataParams,
    "vocab": VocabParams,
    "features": FeaturesParams,
    "embeddings": EmbeddingsParams,
    "model": ModelParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "scst": ScstParams,
}


def _coerce(key: str, value: object, kind: type) -> object:
    """Accept what YAML gives for the declared type; reject everything else."""
    if kind is bool:
        require(isinstance(value, bool), key, "true or false", value)
    elif kind is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
    elif kind is float:
        if isinstance(value, str):  # YAML 1.1 reads `4e-4` as a string
            try:
                value = float(value)
            except ValueError:
                raise ParamError(key, "a number", value) from None
        require(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number", value)
        value = float(value)
    elif kind is str:
        require(isinstance(value, str), key, "a string", value)
    return value


def parse_section(section: str, values: dict | None):
    """Build and validate the dataclass of one params.yaml section from its raw mapping."""
    cls = SECTIONS[section]
    values = values or {}
    if not isinstance(values, dict):
        raise ParamError(section, "a mapping of keys to values", values)
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ParamError(f"{section}.{key}", f"one of the known keys ({', '.join(known)})", "unknown key")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    params = cls(**kwargs)
    params.check()
    return params


def load_params(section: str, path: str | Path = "params.yaml"):
    """Read and validate one section of params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: params file not found (run from the repository root)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CaptioningError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return parse_section(section, document.get(section))
