"""params.yaml, one dataclass per stage, validated once when a stage starts.

params.yaml holds every value; the dataclasses only say what each key accepts. Every check raises a
one-line error naming the key and the allowed values, so a typo in `dvc exp run -S train.lr=-1` (or a key
left out, or written twice) stops the stage with one clear line.

The unbounded numbers (learning rates, loss weights, the length penalty) also declare their usual range
(`Usual`): a value outside it runs, with one warning naming the key and the range; a value beyond any
sensible use (`train.hard_lambda_r: 1e6` trained to nonsense without a word) is refused.
"""

# No `from __future__ import annotations`: the rules in the annotations are built once, with the classes.
import dataclasses
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml

from captioning.errors import CaptioningError, ParamError

DATASETS = ("scenes", "flickr30k", "flickr8k", "coco", "folder")
# The annotation formats each real dataset can be read from (data.format; `auto` detects them). `folder` is your own
# photos with captions.csv or captions.jsonl beside them (captioning/data/readers/folder.py).
DATASET_FORMATS = {
    "flickr30k": ("karpathy", "hf_csv", "kaggle_csv", "token"),
    "flickr8k": ("karpathy", "flickr8k_token", "flickr8k_csv"),
    "coco": ("karpathy",),
    "folder": ("csv", "jsonl"),
}
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
BAD_IMAGE_POLICIES = ("skip", "error")
SELECT_BY = ("bleu_4", "cider", "meteor", "rouge_l")
ATTENTION_KINDS = ("soft", "hard", "none")
ENCODERS = ("resnet50", "resnet101", "resnet152")
IMAGENET_VARIANTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")
IMPLEMENTATIONS = ("auto", "paper", "fast")
SCST_BASELINES = ("greedy", "mean")
log = logging.getLogger(__name__)


def require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ParamError(key, allowed, got)


@dataclass(frozen=True)
class Rule:
    """What one key accepts beyond its type: `allowed` completes the error's "must be ..."."""

    allowed: str
    accepts: Callable[[Any], bool]


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda value: value in choices)


def at_least(low: int, note: str = "") -> Rule:
    return Rule(f"an integer >= {low}{note}", lambda value: value >= low)


def number_at_least(low: float) -> Rule:
    return Rule(f"a number >= {low}", lambda value: value >= low)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number_above(low: float) -> Rule:
    return Rule(f"a number > {low}", lambda value: value > low)


@dataclass(frozen=True)
class Usual:
    """Where a number is sensible: [low, high] runs quietly; up to `limit` runs with one warning; above, refused."""

    low: float
    high: float
    limit: float
    meaning: str  # what the key does and its default, completing the messages

    def range(self) -> str:
        return f"{self.low:g} to {self.high:g}"


# The loss terms weighted below are of order 1 per word (the cross-entropy); a weight over 100 lets the term
# alone drive training. Adam moves every weight by about lr per step: 1 or more destroys the weights at once.
LEARNING_RATE = Usual(1e-5, 1e-2, 1, "Adam's step size, 0.001 by default")
SCST_LEARNING_RATE = Usual(1e-6, 1e-3, 1, "Adam's step size from the cross-entropy weights, 5e-05 by default")
ALPHA_C = Usual(0, 10, 100, "the weight of the attention penalty, the paper's 1.0, 0 by default")
LAMBDA_R = Usual(0, 1, 100, "the weight of the REINFORCE term, 0.01 by default; 0.1 already ungrounds attention")
LAMBDA_E = Usual(0, 0.1, 100, "the weight of the entropy term, 0.002 by default")
LENGTH_PENALTY = Usual(0, 2, 10, "beam scores are divided by length ** length_penalty, 1 by default")


class Section:
    """One params.yaml section. Each field declares its key's type and rule, `key: Annotated[type, rule]`, and
    the key is named after the field. No field has a default: the values live in params.yaml only, so a key
    left out is an error. check() holds what involves more than one key.
    """

    def check(self) -> None:
        """Checks that involve several keys (each key's own rule is declared beside its field)."""


@dataclass(frozen=True)
class DataParams(Section):
    dataset: Annotated[str, one_of(DATASETS)]
    root: str
    format: str
    seed: int
    num_train: Annotated[int, at_least(1)]
    num_val: Annotated[int, at_least(1)]
    num_test: Annotated[int, at_least(1)]
    image_size: Annotated[int, at_least(32)]
    min_objects: Annotated[int, Rule("an integer from 1 to 9", lambda value: 1 <= value <= 9)]
    max_objects: int
    captions_per_image: Annotated[int, at_least(1)]
    on_bad_image: Annotated[str, one_of(BAD_IMAGE_POLICIES)]

    def check(self) -> None:
        if self.dataset in DATASET_FORMATS:
            formats = ("auto",) + DATASET_FORMATS[self.dataset]
            require(self.format in formats, "data.format", f"one of {', '.join(formats)}", self.format)
            holding = f"the {self.dataset} download" if self.dataset != "folder" else "your images and their captions"
            require(bool(self.root), "data.root", f"the folder holding {holding}", self.root)
        require(
            self.min_objects <= self.max_objects <= 9,
            "data.max_objects",
            f"an integer from data.min_objects ({self.min_objects}) to 9",
            self.max_objects,
        )


@dataclass(frozen=True)
class VocabParams(Section):
    min_word_freq: Annotated[int, at_least(1)]
    max_len: Annotated[int, at_least(1)]


@dataclass(frozen=True)
class FeaturesParams(Section):
    encoder: Annotated[str, one_of(ENCODERS)]
    weights: Annotated[
        str,
        Rule(
            "none, imagenet or the path of a .pth/.pt state dict",
            lambda value: value in ("none", "imagenet") or value.endswith((".pth", ".pt")),
        ),
    ]
    imagenet_variant: Annotated[str, one_of(IMAGENET_VARIANTS)]
    seed: int
    image_size: Annotated[int, at_least(32)]
    batch_size: Annotated[int, at_least(1)]
    precision: Annotated[str, one_of(PRECISIONS)]
    num_workers: Annotated[int, at_least(0)]
    chunk_size: Annotated[int, at_least(1)]
    nproc: Annotated[int, at_least(1)]


@dataclass(frozen=True)
class EmbeddingsParams(Section):
    dim: Annotated[int, at_least(1)]
    word2vec_path: str
    limit: Annotated[int, at_least(0, " (0 = no limit)")]
    window: Annotated[int, at_least(1)]
    epochs: Annotated[int, at_least(1)]
    seed: int
    finetune: bool


@dataclass(frozen=True)
class ModelParams(Section):
    attention: Annotated[str, one_of(ATTENTION_KINDS)]
    attention_dim: Annotated[int, at_least(1)]
    decoder_dim: Annotated[int, at_least(1)]
    dropout: Annotated[float, Rule("a number in [0, 1)", lambda value: 0 <= value < 1)]
    deep_output: bool
    implementation: Annotated[str, one_of(IMPLEMENTATIONS)]


@dataclass(frozen=True)
class TrainParams(Section):
    lr: Annotated[float, number_above(0), LEARNING_RATE]
    epochs: Annotated[int, at_least(1)]
    batch_size: Annotated[int, at_least(1)]
    step_size: Annotated[int, at_least(1)]
    gamma: Annotated[float, Rule("a number in (0, 1]", lambda value: 0 < value <= 1)]
    seed: int
    grad_clip: Annotated[float, number_above(0)]
    alpha_c: Annotated[float, number_at_least(0), ALPHA_C]
    select_by: Annotated[str, one_of(SELECT_BY)]
    precision: Annotated[str, one_of(PRECISIONS)]
    val_max_len: Annotated[int, at_least(1)]
    feature_memory_gb: Annotated[
        float | str,
        Rule("auto or a number >= 0", lambda value: value == "auto" or _number(value) and value >= 0),
    ]
    nproc_per_node: Annotated[int, at_least(1)]
    nnodes: Annotated[int, at_least(1)]
    node_rank: int
    master_addr: Annotated[str, Rule("the address of node_rank 0", bool)]
    master_port: Annotated[int, Rule("a port number (1-65535)", lambda value: 1 <= value <= 65535)]
    # model.attention: hard only (section 4.1; see docs/hard_attention.md)
    hard_expected_prob: Annotated[float, Rule("a number in [0, 1]", lambda value: 0 <= value <= 1)]
    hard_baseline_decay: Annotated[float, Rule("a number in [0, 1)", lambda value: 0 <= value < 1)]
    hard_lambda_r: Annotated[float, number_at_least(0), LAMBDA_R]
    hard_lambda_e: Annotated[float, number_at_least(0), LAMBDA_E]

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        last_node = self.nnodes - 1
        require(
            0 <= self.node_rank <= last_node, "train.node_rank", f"an integer from 0 to {last_node}", self.node_rank
        )
        require(
            self.batch_size >= self.world_size,
            "train.batch_size",
            f"at least nproc_per_node * nnodes ({self.world_size}): it is the global batch, split among the processes",
            self.batch_size,
        )


@dataclass(frozen=True)
class EvaluateParams(Section):
    beam_size: Annotated[int, at_least(1)]
    max_len: Annotated[int, at_least(1)]
    length_penalty: Annotated[float, number_at_least(0), LENGTH_PENALTY]
    batch_size: Annotated[int, at_least(1)]
    figures: Annotated[int, at_least(0)]  # attention figures for the first N test images (reports/attention)
    gallery_images: Annotated[int, at_least(0)]  # test images in reports/gallery.html
    bootstrap_resamples: Annotated[int, at_least(1)]  # resamples of the test images for metrics/intervals.json
    bootstrap_seed: int


@dataclass(frozen=True)
class ScstParams(Section):
    epochs: Annotated[int, Rule("an integer >= 0 (0 passes the cross-entropy model through)", lambda v: v >= 0)]
    lr: Annotated[float, number_above(0), SCST_LEARNING_RATE]
    samples: Annotated[int, at_least(1)]
    baseline: Annotated[str, one_of(SCST_BASELINES)]
    max_len: Annotated[int, at_least(1)]
    batch_size: Annotated[int, Rule("an integer >= 1 (images per batch)", lambda value: value >= 1)]
    seed: int
    step_size: Annotated[int, at_least(1)]
    gamma: Annotated[float, Rule("a number in (0, 1]", lambda value: 0 < value <= 1)]

    def check(self) -> None:
        if self.baseline == "mean":
            require(
                self.samples >= 2,
                "scst.samples",
                "an integer >= 2 (the mean baseline averages the other samples)",
                self.samples,
            )


# Knobs of the machine: they change how fast a stage runs or where its work runs, never what it writes, so dvc.yaml
# leaves them out of the stages' params (a new value reruns nothing; tests/test_machine_knobs.py holds each one
# result-neutral). Batch sizes are not: features.batch_size 5 against 16 changed the fp32 features, and
# evaluate.batch_size 1 against 8 an attention figure (batched convolutions and beam search round differently).
MACHINE_KNOBS = (
    "features.num_workers",  # image-decoding processes
    "features.nproc",  # extracting processes (GPUs)
    "features.chunk_size",  # images per resumable part
    "train.feature_memory_gb",  # features read into RAM or batch by batch
    "train.node_rank",  # which machine runs DVC in a several-machine run
    "train.master_addr",  # where node_rank 0 listens (several machines only)
    "train.master_port",
)
# The data stage reads its dataset from data.root; the features and evaluate stages read it only to find the same
# images on this machine (the caption table says which, by name and content: captioning/data/table.py), so to them
# it is a knob of the machine too, and a teammate's other folder reruns the data stage alone.
IMAGE_FOLDER = "data.root"


def without_machine_knobs(section: str, params: Section) -> dict:
    """`params` of `section` as a dict without its machine knobs: what identifies a run to resume, so an
    interrupted run restarted with more workers or another RAM budget goes on where it stopped."""
    knobs = {key.partition(".")[2] for key in MACHINE_KNOBS if key.startswith(f"{section}.")}
    return {key: value for key, value in dataclasses.asdict(params).items() if key not in knobs}


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


def _declared(cls: type) -> dict[str, tuple[type, list[Rule | Usual]]]:
    """Each field's type and rules, from `name: Annotated[type, rule, ...]` (or a plain `name: type`)."""
    declared = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        if typing.get_origin(hint) is Annotated:
            kind, *extras = typing.get_args(hint)
            declared[name] = (kind, [extra for extra in extras if isinstance(extra, Rule | Usual)])
        else:
            declared[name] = (hint, [])
    return declared


def _check_usual(key: str, value: float, usual: Usual) -> None:
    require(value <= usual.limit, key, f"a number <= {usual.limit:g} (usually {usual.range()}: {usual.meaning})", value)
    if not usual.low <= value <= usual.high:
        log.warning(
            "params.yaml: %s is %r, outside the usual %s (%s): check that it is meant",
            key,
            value,
            usual.range(),
            usual.meaning,
        )


def parse_section(section: str, values: dict | None) -> Section:
    """Build and validate the dataclass of one params.yaml section from its raw mapping.

    Order: unknown keys, then each given key's type and rule, then keys left out, then the checks across keys.
    """
    cls = SECTIONS[section]
    if values is None:
        raise CaptioningError(f"params.yaml: {section} is missing (add the section; see the repository's params.yaml)")
    if not isinstance(values, dict):
        raise ParamError(section, "a mapping of keys to values", values)
    declared = _declared(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ParamError(f"{section}.{key}", f"one of the known keys ({', '.join(known)})", "unknown key")
        kind, rules = declared[key]
        kwargs[key] = _coerce(f"{section}.{key}", value, kind)
        for rule in rules:
            if isinstance(rule, Usual):
                _check_usual(f"{section}.{key}", kwargs[key], rule)
            else:
                require(rule.accepts(kwargs[key]), f"{section}.{key}", rule.allowed, kwargs[key])
    missing = [f"{section}.{key}" for key in known if key not in kwargs]
    if len(missing) == 1:
        raise CaptioningError(
            f"params.yaml: {missing[0]} is missing (add it to the {section} section; see the repository's params.yaml)"
        )
    if missing:
        raise CaptioningError(
            f"params.yaml: {', '.join(missing)} are missing "
            f"(add them to the {section} section; see the repository's params.yaml)"
        )
    params = cls(**kwargs)
    params.check()
    return params


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: str, line: int):
        super().__init__(f"line {line}: duplicate key {key}")
        self.key, self.line = key, line


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key written twice in one mapping is an error, not "the last one wins"."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._refuse_duplicate_keys(node, "", set())
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, node: yaml.Node, where: str, visited: set[int]) -> None:
        if id(node) in visited:  # an alias: already checked (and possibly recursive)
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, expanded by the constructor
                    self._refuse_duplicate_keys(value_node, where, visited)
                    continue
                key = self.construct_object(key_node, deep=True)
                dotted = f"{where}.{key}" if where else str(key)
                try:
                    if key in seen:
                        raise DuplicateKeyError(dotted, key_node.start_mark.line + 1)
                    seen.add(key)
                except TypeError:  # an unhashable key (a list as a key): the constructor reports it
                    pass
                self._refuse_duplicate_keys(value_node, dotted, visited)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._refuse_duplicate_keys(item, f"{where}[{index}]", visited)


def load_params(section: str, path: str | Path = "params.yaml") -> Section:
    """Read and validate one section of params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: params file not found (run from the repository root)")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except DuplicateKeyError as error:
        raise CaptioningError(f"{path}:{error.line}: duplicate key {error.key}") from None
    except yaml.YAMLError as error:
        raise CaptioningError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise CaptioningError(f"{path}: must be a mapping of sections ({', '.join(SECTIONS)}), got {document!r}")
    return parse_section(section, document.get(section))
