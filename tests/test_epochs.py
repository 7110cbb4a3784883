"""captioning/train/epochs.py: the epoch loop on a one-layer model: the kept epoch, epoch 0, resuming, DVCLive."""

from __future__ import annotations

import collections
import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

from captioning.errors import CaptioningError
from captioning.train.epochs import EpochLog, EpochPlan, run_epochs
from captioning.train.resume import ResumableRun, ResumeFile

INPUTS = torch.linspace(-1, 1, 16).reshape(8, 2)


class LineStep:
    """Fits y = x1 + x2 with noisy batches drawn from both its numpy rng and its own torch generator."""

    name = "epoch"

    def __init__(self, model: nn.Module, seed: int = 0):
        self.model, self.rng = model, np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.epochs_trained = []

    def train_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        self.epochs_trained.append(epoch)
        inputs = torch.from_numpy(self.rng.normal(size=(8, 2))).float()
        targets = inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(8, 1, generator=self.generator)
        loss = ((self.model(inputs) - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def describe(self, values: dict[str, float]) -> str:
        return f"loss {values['loss']:.4f}"

    def resume_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def restore(self, saved: dict) -> None:
        self.generator.set_state(saved["generator"])


def fitted_score(model: nn.Module) -> dict[str, float]:
    """Higher is better: minus the squared error on fixed inputs."""
    with torch.no_grad():
        return {"score": -float(((model(INPUTS) - INPUTS.sum(dim=1, keepdim=True)) ** 2).mean()), "other": 1.0}


def scripted(values: list[float]):
    """A validation that returns the next of `values` as the score, whatever the model."""
    remaining = list(values)
    return lambda: {"score": remaining.pop(0)}


def plan(epochs: int = 4, **options) -> EpochPlan:
    return EpochPlan(
        epochs=epochs,
        lr=0.05,
        step_size=2,
        gamma=0.5,
        select_by="score",
        select_by_param="params.yaml: test.select_by",
        **options,
    )


def run(epochs=4, validate=None, resume=None, stop_at=None, **options):
    """A fresh model and step; returns (model, step, best, logged epochs)."""
    torch.manual_seed(0)
    model, logged = nn.Linear(2, 1), []
    step = LineStep(model)

    def on_epoch_end(position, values, is_best):
        if position == stop_at:
            raise KeyboardInterrupt  # as a kill would: the epochs before were saved, this one not
        logged.append((position, dict(values), is_best))

    validate = validate or (lambda: fitted_score(model))
    best = run_epochs(model, step, validate, plan(epochs, **options), on_epoch_end, resume)
    return model, step, best, logged


@pytest.mark.parametrize("background", [False, True])
def test_the_best_epoch_is_kept_and_its_weights_restored(background):
    weights = []
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    scores = iter([0.1, 0.3, 0.2, 0.3])

    def validate():
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": next(scores)}

    logged = []
    best = run_epochs(
        model, LineStep(model), validate, plan(4, score_in_background=background), lambda *epoch: logged.append(epoch)
    )
    assert [position for position, _, _ in logged] == [0, 1, 2, 3]
    assert [is_best for _, _, is_best in logged] == [True, True, False, False]  # a tie is no improvement
    assert best == {"score": 0.3, "epoch": 2}
    assert all(torch.equal(model.state_dict()[k], weights[1][k]) for k in weights[1])


@pytest.mark.parametrize("background", [False, True])
def test_every_epoch_logs_its_rate_its_numbers_and_its_scores_and_the_rate_decays(background):
    _, step, _, logged = run(epochs=5, score_in_background=background)
    assert step.epochs_trained == [1, 2, 3, 4, 5]
    assert [values["lr"] for _, values, _ in logged] == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125])
    assert list(logged[0][1]) == ["lr", "loss", "val_score", "val_other"]


@pytest.mark.parametrize("background", [False, True])
def test_with_validate_start_epoch_0_is_the_starting_model_and_is_kept_when_nothing_beats_it(background):
    model, step, best, logged = run(
        epochs=2, validate=scripted([0.5, 0.4, 0.5]), validate_start=True, score_in_background=background
    )
    assert step.epochs_trained == [1, 2]
    assert [(position, values, is_best) for position, values, is_best in logged][0] == (0, {"val_score": 0.5}, True)
    assert [is_best for _, _, is_best in logged] == [True, False, False]
    assert best == {"score": 0.5, "epoch": 0}
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), nn.Linear(2, 1).state_dict().values()))


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("validate_start", [False, True])
def test_a_run_interrupted_and_resumed_ends_as_an_uninterrupted_one(tmp_path, validate_start, background):
    """In the background the state saved after an epoch holds its captions, not yet scored: the rerun scores them."""
    straight, _, straight_best, straight_log = run(epochs=4, validate_start=validate_start)  # scored in line
    resume = ResumeFile(tmp_path / "state.pt", "key")
    options = {"validate_start": validate_start, "score_in_background": background}
    with pytest.raises(KeyboardInterrupt):
        run(epochs=4, resume=resume, stop_at=2, **options)
    pending = torch.load(tmp_path / "state.pt", weights_only=True)["pending"]
    assert (pending is not None) == background
    resumed, step, resumed_best, resumed_log = run(epochs=4, resume=resume, **options)
    # only the epochs not saved are trained again; in the background, the epoch stopped at was logged (and the run
    # stopped) after the next had trained and been saved, its captions not yet scored
    assert step.epochs_trained == list(range(3 - validate_start + background, 5))
    assert resumed_log == straight_log and resumed_best == straight_best  # the saved epochs replayed first
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


class ScoredWhileTraining:
    """A validation whose host part, scoring epoch k, waits (up to a minute) for epoch k + 1's training to start:
    it can only see it start when it runs beside the training. One event per epoch, never cleared, so a scoring
    thread that starts late still sees the start it waits for."""

    def __init__(self, step: LineStep):
        self.step, self.seen = step, []
        self.started = collections.defaultdict(threading.Event)  # epoch -> its training has started
        train_epoch = step.train_epoch

        def train_and_signal(optimizer, epoch):
            self.started[epoch].set()
            return train_epoch(optimizer, epoch)

        step.train_epoch = train_and_signal

    def captions(self) -> dict[str, float]:
        epoch = len(self.step.epochs_trained)
        self.started[epoch + 1]  # created here, on the loop's thread
        return {"score": float(epoch)}

    def scores(self, captions: dict[str, float]) -> dict[str, float]:
        epoch = int(captions["score"])
        self.seen.append(epoch == 3 or self.started[epoch + 1].wait(timeout=60))
        return captions


def test_in_the_background_an_epoch_is_scored_while_the_next_one_trains():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    step = LineStep(model)
    validator = ScoredWhileTraining(step)
    best = run_epochs(model, step, validator, plan(3, score_in_background=True))
    assert validator.seen == [True, True, True] and best["epoch"] == 3


def test_state_saved_under_another_key_is_ignored(tmp_path):
    run(epochs=2, resume=ResumeFile(tmp_path / "state.pt", "one"))
    _, step, _, logged = run(epochs=2, resume=ResumeFile(tmp_path / "state.pt", "other"))
    assert step.epochs_trained == [1, 2] and len(logged) == 2


def test_selecting_by_a_score_the_validation_lacks_is_a_one_line_error_naming_the_parameter():
    with pytest.raises(CaptioningError, match=r"params.yaml: test.select_by=score is not available here.*other"):
        run(epochs=1, validate=lambda: {"other": 1.0})


def test_the_epoch_log_writes_each_epoch_as_a_dvclive_step_and_the_summary(tmp_path):
    with EpochLog(tmp_path / "live") as epoch_log:
        epoch_log(0, {"loss": 2.0, "val_score": 0.1}, True)
        epoch_log(1, {"loss": 1.0, "val_score": 0.3}, True)
        epoch_log.summarize(best_epoch=2, best_val_score=0.3)
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary == {"loss": 1.0, "val_score": 0.3, "step": 2, "best_epoch": 2, "best_val_score": 0.3}
    rows = (tmp_path / "live/plots/metrics/loss.tsv").read_text().splitlines()
    assert rows == ["step\tloss", "0\t2.0", "1\t1.0"]


def test_wall_clock_values_go_to_the_timings_file_not_to_the_committed_log(tmp_path):
    """Epoch timings differ from run to run: in DVCLive's files (committed, in dvc.lock) they would make a rerun
    of the same training look changed."""
    timings = tmp_path / "scratch/timings.jsonl"
    timings.parent.mkdir()
    timings.write_text('{"step": 7, "epoch_seconds": 1.0}\n')  # a previous run's
    with EpochLog(tmp_path / "live", timings=timings) as epoch_log:
        epoch_log(0, {"loss": 2.0, "epoch_seconds": 30.5, "data_wait_share": 0.01}, True)
        epoch_log(1, {"loss": 1.0, "epoch_seconds": 29.5, "reward_seconds": 2.0}, False)
        epoch_log.summarize(best_epoch=1)
    assert json.loads((tmp_path / "live/metrics.json").read_text()) == {"loss": 1.0, "step": 2, "best_epoch": 1}
    assert sorted(path.name for path in (tmp_path / "live/plots/metrics").iterdir()) == ["loss.tsv"]
    assert [json.loads(line) for line in timings.read_text().splitlines()] == [
        {"step": 0, "epoch_seconds": 30.5, "data_wait_share": 0.01},
        {"step": 1, "epoch_seconds": 29.5, "reward_seconds": 2.0},
    ]


def test_a_disabled_epoch_log_writes_nothing(tmp_path):
    with EpochLog(tmp_path / "live", enabled=False) as epoch_log:
        epoch_log(0, {"loss": 2.0}, True)
        epoch_log.summarize(best_epoch=1)
    assert not (tmp_path / "live").exists()


def resumable_line(path) -> ResumableRun:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    return ResumableRun(path, "key", model, optimizer, scheduler, np.random.default_rng(0))


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as on a machine with 2 GPUs in use, its RNG states kept in a list: what a CPU can check."""
    states = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [state.clone() for state in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda new: states.__setitem__(slice(None), new))
    return states


def test_the_cuda_random_states_are_saved_and_restored(tmp_path, fake_cuda):
    """Dropout on a GPU draws from the CUDA RNGs: without them, a resumed GPU run differs from an uninterrupted one."""
    run = resumable_line(tmp_path / "state.pt")
    run.save(history=[], best={}, best_state={})
    saved_states = [state.clone() for state in fake_cuda]
    fake_cuda[:] = [torch.zeros(8, dtype=torch.uint8)] * 2  # the GPUs drew on after the save

    resumed = resumable_line(tmp_path / "state.pt")
    resumed.restore(resumed.load())
    assert all(torch.equal(a, b) for a, b in zip(fake_cuda, saved_states, strict=True))


def test_a_state_saved_without_cuda_random_states_still_loads(tmp_path, fake_cuda):
    """A file of an older version, or of a CPU run, continued on a GPU: the CUDA RNGs are left as they are."""
    run = resumable_line(tmp_path / "state.pt")
    run.save(history=[], best={}, best_state={})
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    del state["cuda_rng"]
    torch.save(state, tmp_path / "state.pt")
    before = [state.clone() for state in fake_cuda]

    resumed = resumable_line(tmp_path / "state.pt")
    assert resumed.restore(resumed.load()) == ([], {}, {})
    assert all(torch.equal(a, b) for a, b in zip(fake_cuda, before, strict=True))


def test_a_cpu_run_saves_no_cuda_random_state(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    resumable_line(tmp_path / "state.pt").save(history=[], best={}, best_state={})
    assert "cuda_rng" not in torch.load(tmp_path / "state.pt", weights_only=True)
