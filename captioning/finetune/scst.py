"""Self-critical sequence training (Rennie et al., CVPR 2017): fine-tuning for CIDEr-D with REINFORCE.

For each training image, K captions w^s are sampled from the model; each earns the reward r(w^s), its
CIDEr-D against all the image's references, and the gradient of the loss is

    -(r(w^s) - b) * grad log p(w^s | image)

with a baseline b that needs no learned critic: `greedy` (Rennie's) is the reward of the model's own
greedy caption, `mean` ("new self-critical") the mean reward of the image's other K-1 samples.
Rewards and baselines are plain numbers computed without gradient, so nothing flows through b.

Where public implementations went wrong, and what this one does:
- document frequencies come once from the training references (captioning.finetune.cider), not from the batch;
- the end token is part of every caption scored, sampled, greedy and reference alike: a caption that
  stops mid-phrase ("a red circle at the") loses the n-grams that end where the references end;
- sampling and the greedy baseline both run in eval mode (no dropout): the policy being improved is the
  one that captions at test time, and a sample equal to the greedy caption has advantage exactly 0;
- a small learning rate of its own (scst.lr, StepLR), starting from the cross-entropy model;
- the kept epoch is the one with the best validation CIDEr-D, where epoch 0 is the cross-entropy model
  itself, so fine-tuning never leaves a model worse on validation than the one it started from.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captioning.checkpoint import save_model
from captioning.data.table import CaptionTable
from captioning.features.store import FeatureStore
from captioning.finetune.cider import CiderD
from captioning.io import atomic_path
from captioning.model import CaptionDecoder
from captioning.model.decoding import Sampled, greedy_tokens, sample_captions
from captioning.params import ScstParams
from captioning.text.vocabulary import END, Vocabulary
from captioning.train.epochs import EpochEnd, EpochPlan, run_epochs
from captioning.train.resume import ResumeFile
from captioning.train.validation import Validation, ValidationRun

log = logging.getLogger(__name__)
SELECT_BY = "cider"


@dataclass
class RewardImages:
    """The images rewards are computed for: feature rows and reference captions as words ending in <end>."""

    names: list[str]
    feature_rows: np.ndarray
    references: list[list[list[str]]]

    @classmethod
    def from_split(cls, table: CaptionTable, store: FeatureStore, split: str = "train") -> RewardImages:
        records = [r for r in table.split(split) if r.image not in store.skipped]
        names = [r.image for r in records]
        references = [[tokens + [END] for tokens in r.tokenized()] for r in records]
        return cls(names, store.rows_for(names), references)


def caption_words(tokens: torch.Tensor, lengths: torch.Tensor, vocabulary: Vocabulary) -> list[list[str]]:
    """Each row's first `length` word ids as words (its <end> included)."""
    rows = torch.cat([tokens, lengths.unsqueeze(1)], dim=1).tolist()  # one read from the device, not two
    return [[vocabulary.words[i] for i in row[: row[-1]]] for row in rows]


def greedy_rewards(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    images: np.ndarray,
    cider: CiderD,
    vocabulary: Vocabulary,
    max_len: int,
    stop_early: bool | None = None,
) -> np.ndarray:
    """Rennie's baseline: the reward of each image's greedy caption (eval mode, no gradient): (B,)."""
    tokens = greedy_tokens(decoder, features, vocabulary.start, vocabulary.end, max_len, stop_early)
    return greedy_caption_rewards(tokens, images, cider, vocabulary, max_len)


def greedy_caption_rewards(
    tokens: torch.Tensor, images: np.ndarray, cider: CiderD, vocabulary: Vocabulary, max_len: int
) -> np.ndarray:
    """The rewards of greedy_tokens' captions (B, T), read from the device at once: (B,)."""
    rows = tokens.tolist()  # one read
    words = []
    for row in rows:
        # Up to <end>, which is kept; a caption that never emitted it has max_len words and no <end>.
        length = row.index(vocabulary.end) if vocabulary.end in row else len(row)
        words.append([vocabulary.words[i] for i in row[:length]] + ([END] if length < max_len else []))
    return cider.scores(words, images)


def mean_of_others(rewards: np.ndarray) -> np.ndarray:
    """The "new self-critical" baseline: for each of an image's K samples, the mean reward of the other K-1.

    rewards (B, K) -> (B, K).
    """
    samples = rewards.shape[1]
    return (rewards.sum(axis=1, keepdims=True) - rewards) / (samples - 1)


def policy_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a baseline: -(r - b) log p(w^s), averaged over the sampled captions.

    `advantages` (r - b) carry no gradient; minimising this raises the probability of captions that beat
    their baseline and lowers that of captions that fall short of it.
    """
    return -(advantages.detach() * log_probs).mean()


def scst_batch(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    images: np.ndarray,
    cider: CiderD,
    vocabulary: Vocabulary,
    params: ScstParams,
    generator: torch.Generator | None,
    stop_early: bool | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch of images (B, R, F) and what to log about it; `images` index cider's references.

    It reads from the device only the sampled captions and the greedy ones (the reward needs them), once each,
    and with stop_early (by default everywhere but on CUDA: see sample_captions) a flag per decoding step.
    """
    k = params.samples
    sampled: Sampled = sample_captions(
        decoder, features, vocabulary.start, vocabulary.end, k, params.max_len, generator, stop_early
    )
    started = time.perf_counter()
    words = caption_words(sampled.tokens, sampled.lengths, vocabulary)  # the sampled captions, read once
    greedy = None
    if params.baseline == "greedy":  # queued before the samples' rewards: a GPU decodes while the host scores
        greedy = greedy_tokens(decoder, features, vocabulary.start, vocabulary.end, params.max_len, stop_early)
    rewards = cider.scores(words, np.repeat(images, k))
    rewards = rewards.reshape(-1, k)  # (B, K)
    if greedy is not None:
        baseline = np.repeat(greedy_caption_rewards(greedy, images, cider, vocabulary, params.max_len)[:, None], k, 1)
    else:
        baseline = mean_of_others(rewards)
    reward_seconds = time.perf_counter() - started
    advantages = torch.from_numpy((rewards - baseline).reshape(-1)).float().to(features.device)
    loss = policy_loss(sampled.log_probs, advantages)
    return loss, {
        "reward": float(rewards.mean()),
        "baseline": float(baseline.mean()),
        "sample_length": float(torch.tensor([len(w) for w in words], dtype=torch.float32).mean()),  # on the host
        "reward_seconds": reward_seconds,
    }


def scst_step(
    decoder: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    images: np.ndarray,
    cider: CiderD,
    vocabulary: Vocabulary,
    params: ScstParams,
    generator: torch.Generator | None,
    stop_early: bool | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """scst_batch, backward and the optimiser's step. Returns the loss, still on the device (reading it would
    make the host wait for the backward pass), and scst_batch's values (host numbers)."""
    loss, values = scst_batch(decoder, features, images, cider, vocabulary, params, generator, stop_early)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), values


class ScstStep:
    """Self-critical training's epoch for the epoch loop (captioning/train/epochs.py): the training images in
    random order, in batches of scst_batch; its own torch generator draws the samples."""

    name = "scst epoch"

    def __init__(
        self,
        decoder: CaptionDecoder,
        images: RewardImages,
        store: FeatureStore,
        vocabulary: Vocabulary,
        params: ScstParams,
        device: torch.device,
    ):
        self.decoder, self.images, self.store, self.vocabulary = decoder, images, store, vocabulary
        self.params, self.device = params, device
        self.cider = CiderD(images.references)  # document frequencies once, from the training references
        self.generator = torch.Generator(device=device).manual_seed(params.seed)
        self.rng = np.random.default_rng(params.seed)

    def train_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        """One pass over the images in random order; returns the means over its batches."""
        decoder, params, images = self.decoder, self.params, self.images
        decoder.eval()  # sampling without dropout: see the module docstring
        order = self.rng.permutation(len(images.names))
        sums: dict[str, float] = {}
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # read once, after the epoch
        batches, started = 0, time.perf_counter()
        with tqdm(total=len(images.names), unit="img", desc=f"scst epoch {epoch}/{params.epochs}") as progress:
            for i in range(0, len(order), params.batch_size):
                batch = order[i : i + params.batch_size]
                features = torch.from_numpy(self.store.rows(images.feature_rows[batch])).to(self.device)
                loss, values = scst_step(
                    decoder, optimizer, features, batch, self.cider, self.vocabulary, params, self.generator
                )
                loss_sum += loss.double()
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
                batches += 1
                progress.update(len(batch))
                progress.set_postfix(reward=f"{sums['reward'] / batches:.3f}")
        sums["loss"] = loss_sum.item()
        means = {key: value / batches for key, value in sums.items()}
        means["epoch_seconds"] = time.perf_counter() - started
        return means

    def describe(self, values: dict[str, float]) -> str:
        return f"reward {values['reward']:.4f}, baseline {values['baseline']:.4f}"

    def resume_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def restore(self, saved: dict) -> None:
        self.generator.set_state(saved["generator"])


def finetune(
    decoder: CaptionDecoder,
    images: RewardImages,
    store: FeatureStore,
    vocabulary: Vocabulary,
    validation: Validation,
    params: ScstParams,
    *,
    on_epoch_end: EpochEnd | None = None,
    resume: ResumeFile | None = None,
) -> dict:
    """Self-critical training for params.epochs in the epoch loop (captioning/train/epochs.py) on `images`, their
    features read from `store`, captions sampled in `vocabulary`, where the decoder is;
    on_epoch_end(epoch, values, is_best) after epoch 0 .. epochs.

    Epoch 0 is the starting model, validated only. Returns the best validation scores (with "epoch");
    the decoder ends holding that epoch's weights. With `resume`, a run interrupted after some epochs
    continues from the last one it saved.
    """
    step = ScstStep(decoder, images, store, vocabulary, params, next(decoder.parameters()).device)
    plan = EpochPlan(
        epochs=params.epochs,
        lr=params.lr,
        step_size=params.step_size,
        gamma=params.gamma,
        select_by=SELECT_BY,
        select_by_param="captioning/finetune/scst.py: SELECT_BY",
        validate_start=True,
    )
    return run_epochs(decoder, step, ValidationRun(decoder, validation), plan, on_epoch_end, resume)


def pass_through(source: str | Path, target: str | Path) -> None:
    """scst.epochs 0: the cross-entropy model file, byte for byte (DVC's cache then holds it once)."""
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)


def save_finetuned(
    path: str | Path, decoder: CaptionDecoder, cross_entropy: dict, best: dict, environment: dict[str, str]
) -> None:
    """The kept epoch's decoder as a model file, with the words and feature recipe of the model it started from
    and the environment of this fine-tuning run."""
    validation = {k: v for k, v in best.items() if k != "epoch"}
    words, recipe = cross_entropy["words"], cross_entropy["feature_recipe"]
    save_model(
        path,
        decoder,
        words,
        recipe,
        epoch=cross_entropy.get("epoch"),
        scst_epoch=best["epoch"],
        validation=validation,
        environment=environment,
    )
