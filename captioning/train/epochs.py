"""The epoch loop of cross-entropy training (captioning/train/cross_entropy.py) and self-critical fine-tuning
(captioning/finetune/scst.py), written once: Adam with StepLR, one epoch of training after another, validation
after each, the best epoch's weights kept, the state saved after every epoch so that a run killed
(kill -9 included) continues where it stopped and ends as an uninterrupted one would, and every
epoch's numbers logged to DVCLive.

Each kind of training supplies an `EpochStep` (one epoch of its training, returning its numbers, and
the random state it draws from) and its validation (captioning/train/validation.py); the loop does the rest.
Under torchrun (see captioning/train/distributed.py) every rank runs the loop; rank 0 alone validates and
saves, and every rank gets its scores.

Validation has two parts: the device's (captioning the validation images) and the host's (scoring the
captions: Java's tokenizer, METEOR, CIDEr). With plan.score_in_background (on a GPU) the host scores an
epoch's captions in a thread while the device trains the next epoch; the epoch is logged, and judged the
best or not, when its scores arrive. The state saved after an epoch then holds its captions, still to be
scored, and the run ends exactly as with scoring in line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from dvclive import Live
from torch import nn

from captioning.errors import CaptioningError
from captioning.train import distributed
from captioning.train.resume import ResumableRun, ResumeFile

log = logging.getLogger(__name__)

EpochEnd = Callable[[int, dict, bool], None]  # (position in the run's history, logged values, is_best)


class EpochStep(Protocol):
    """One kind of training, as the loop sees it."""

    name: str  # how the log names its epochs ("epoch", "scst epoch")
    rng: np.random.Generator  # the step's numpy draws (batch order), saved with the run's state

    def train_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        """Train epoch `epoch` (1, 2, ...) of the run; the epoch's numbers, to be logged."""

    def describe(self, values: dict[str, float]) -> str:
        """The epoch's numbers in a few words for the log ("loss 2.3456")."""

    def resume_state(self) -> dict:
        """What else a continued run needs to draw what this one would have (a torch RNG, a baseline)."""

    def restore(self, saved: dict) -> None:
        """Puts back what resume_state() saved."""


class Validator(Protocol):
    """An epoch's validation in its two parts (captioning/train/validation.py: ValidationRun)."""

    def captions(self) -> object:
        """The device's part, on the loop's thread: the model's output to be scored (a dict of captions)."""

    def scores(self, captions: object) -> dict[str, float]:
        """The host's part: the scores of `captions`, from them alone (it may run while the model trains on)."""


class InLine:
    """A validation all on the loop's thread: `validate()` gives the scores, the host's part has nothing left."""

    def __init__(self, validate: Callable[[], dict[str, float]]):
        self.captions = validate

    def scores(self, captions: dict[str, float]) -> dict[str, float]:
        return captions


@dataclass
class Pending:
    """An epoch validated on the device, its scores still to come (a Future in the background)."""

    epoch: int
    values: dict
    captions: object
    weights: dict[str, torch.Tensor] | None  # the epoch's weights, kept while the model trains on; None: the model's
    scores: Future | None = None


@dataclass(frozen=True, kw_only=True)
class EpochPlan:
    """How many epochs, Adam's rate with its StepLR decay, and the validation score that picks the kept epoch."""

    epochs: int
    lr: float
    step_size: int
    gamma: float
    select_by: str
    select_by_param: str  # where select_by is set ("params.yaml: train.select_by"), for the error naming it
    validate_start: bool = False  # epoch 0 is the starting model, validated only (and kept if no epoch beats it)
    fused: bool | None = None  # Adam's fused kernel (one kernel for all parameters)
    # Score an epoch's captions while the next epoch trains; None: where the model is on a GPU (there the host is
    # free while the device trains; on a CPU both would share the same cores: docs/speed.md)
    score_in_background: bool | None = None


def loss_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 on a GPU needs its loss scaled (small gradients underflow in fp16); bf16 and fp32 do not, and there
    the scaler is a no-op: the same gradients, the same steps, bit for bit."""
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")


def apply_gradients(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    grad_clip: float,
    scaler: torch.amp.GradScaler,
) -> None:
    """Backward, clip the gradients' norm to `grad_clip` and step, through `scaler`: the gradients are unscaled
    before clipping, and a step whose gradients overflowed is skipped (fp16 only)."""
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def run_epochs(
    decoder: nn.Module,
    step: EpochStep,
    validate: Validator | Callable[[], dict[str, float]],
    plan: EpochPlan,
    on_epoch_end: EpochEnd | None = None,
    resume: ResumeFile | None = None,
) -> dict:
    """Train `decoder` for plan.epochs by `step`, validating each epoch with `validate` (on rank 0 only: a
    Validator, or a function giving the scores at once), calling on_epoch_end(position, values, is_best) after
    each epoch's scores.

    Returns the best validation scores (with "epoch": 1, 2, ... or 0, the starting model, with
    plan.validate_start); the decoder ends holding that epoch's weights. With `resume`, the state after
    every epoch is saved to resume.path, and a later call with the same run key continues after the
    last completed epoch: the epochs already done are replayed to on_epoch_end, the result equals an
    uninterrupted run's.
    """
    validator = validate if hasattr(validate, "scores") else InLine(validate)
    on_epoch_end = on_epoch_end or (lambda epoch, values, is_best: None)
    trainable = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=plan.lr, fused=plan.fused)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=plan.step_size, gamma=plan.gamma)
    path, run_key = (resume.path, resume.run_key) if resume is not None else (None, "")
    resumable = ResumableRun(path, run_key, decoder, optimizer, scheduler, step.rng)
    history: list[tuple[dict, bool]] = []
    best, best_state = {plan.select_by: float("-inf")}, copy_state(decoder)
    main = distributed.is_main()
    deferred = plan.score_in_background  # on every rank (they take the scores at the same points), scored on rank 0
    if deferred is None:
        deferred = next(decoder.parameters()).device.type == "cuda"
    pending: Pending | None = None
    saved = distributed.broadcast(resumable.load() if main else None)  # DDP: every rank resumes from rank 0's
    if saved is not None:
        history, best, best_state = resumable.restore(saved)
        step.restore(saved)
        if saved.get("pending") is not None:  # an epoch whose scores had not arrived: its captions are scored now
            pending = Pending(**saved["pending"], weights=None)
        done = len(history) + (pending is not None) - plan.validate_start
        log.info("resuming after epoch %d of %d (state in %s)", done, plan.epochs, path)
    for position, (values, is_best) in enumerate(history):
        on_epoch_end(position, values, is_best)

    def start_validation(epoch: int, values: dict, scorer: ThreadPoolExecutor | None) -> Pending:
        captions = validator.captions() if main else None
        if not deferred:
            return Pending(epoch, values, captions, weights=None)
        scores = scorer.submit(validator.scores, captions) if scorer is not None else None
        return Pending(epoch, values, captions, copy_state(decoder), scores)

    def finish(done: Pending) -> None:
        nonlocal best, best_state
        scores = None
        if main:
            scores = done.scores.result() if done.scores is not None else validator.scores(done.captions)
        scores = distributed.broadcast(scores)  # DDP: rank 0 validates, the others take its scores
        values = {**done.values, **{f"val_{k}": v for k, v in scores.items()}}
        if plan.select_by not in scores:
            raise CaptioningError(
                f"{plan.select_by_param}={plan.select_by} is not available here (the scorer gave "
                f"{', '.join(sorted(scores))}; METEOR needs Java): choose one of those"
            )
        is_best = scores[plan.select_by] > best[plan.select_by]
        if is_best:
            best = {**scores, "epoch": done.epoch}
            best_state = done.weights if done.weights is not None else copy_state(decoder)
        described = step.describe(values) if done.epoch else "the starting model"
        selected = f"val {plan.select_by} {scores[plan.select_by]:.4f}{' (best)' if is_best else ''}"
        log.info("%s %d: %s, %s", step.name, done.epoch, described, selected)
        history.append((values, is_best))
        on_epoch_end(len(history) - 1, values, is_best)

    def save(waiting: Pending | None) -> None:
        if main:
            unscored = None if waiting is None else {k: getattr(waiting, k) for k in ("epoch", "values", "captions")}
            resumable.save(history, best, best_state, pending=unscored, **step.resume_state())

    def advance(current: Pending) -> None:
        """`current` validated on the device: the previous epoch finishes (its scores have been computed meanwhile),
        then, in line, this one too; then the state is saved."""
        nonlocal pending
        if pending is not None:
            finish(pending)
        pending = current
        if not deferred:
            finish(pending)
            pending = None
        save(pending)

    background = deferred and main
    with ThreadPoolExecutor(1, thread_name_prefix="validation-scores") if background else nullcontext() as scorer:
        if pending is not None:  # resumed before an epoch's scores had arrived: the model holds its weights
            finish(pending)
            pending = None
        if plan.validate_start and not history:
            advance(start_validation(0, {}, scorer))
        for epoch in range(len(history) + 1 - plan.validate_start + (pending is not None), plan.epochs + 1):
            values = {"lr": optimizer.param_groups[0]["lr"], **step.train_epoch(optimizer, epoch)}
            scheduler.step()
            advance(start_validation(epoch, values, scorer))
        if pending is not None:
            finish(pending)
            save(None)
    decoder.load_state_dict(best_state)
    return best


# Wall-clock numbers of an epoch: they differ from run to run and machine to machine, so they stay out of the
# DVCLive log (committed, and recorded in dvc.lock) and go to a timings file beside the run's resume state.
WALL_CLOCK = ("epoch_seconds", "data_wait_share", "reward_seconds")


class EpochLog:
    """A run's DVCLive log (at `path`): every value of every epoch as one step, and the best epoch's summary.
    The wall-clock values (WALL_CLOCK) go instead to `timings` (one JSON line per epoch), when given.

    With enabled=False (the ranks other than 0) it writes nothing.
    """

    def __init__(self, path: str | Path, enabled: bool = True, timings: Path | None = None):
        self.path, self.enabled, self.live, self.timings = Path(path), enabled, None, timings
        self._context, self._timings_mode = nullcontext(), "w"

    def __enter__(self) -> EpochLog:
        if self.enabled:
            self._context = Live(str(self.path), dvcyaml=False, save_dvc_exp=False, report=None)
            self.live = self._context.__enter__()
        self._timings_mode = "w"  # a new file at the first epoch, as DVCLive's (a resumed run replays into both)
        return self

    def __exit__(self, *error) -> None:
        self._context.__exit__(*error)

    def __call__(self, epoch: int, values: dict, is_best: bool) -> None:
        """An EpochEnd: one DVCLive step per epoch."""
        if self.live is None:
            return
        for key, value in values.items():
            if key not in WALL_CLOCK:
                self.live.log_metric(key, value)
        self.live.next_step()
        clock = {key: values[key] for key in WALL_CLOCK if key in values}
        if self.timings is not None and clock:
            self.timings.parent.mkdir(parents=True, exist_ok=True)
            with self.timings.open(self._timings_mode, encoding="utf-8") as timings:
                timings.write(json.dumps({"step": epoch, **clock}) + "\n")
            self._timings_mode = "a"

    def summarize(self, **values) -> None:
        """Adds `values` (best_epoch=..., best_val_cider=...) to the metrics file's summary and writes it."""
        if self.live is not None:
            self.live.summary.update(values)
            self.live.make_summary()
