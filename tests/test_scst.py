"""captioning/finetune/scst.py and the sampler in captioning/model/decoding.py: self-critical training for CIDEr-D."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import VOCAB
from repo_params import repo_params
from tiny_repo import stage_command

from captioning.checkpoint import load_model, save_model
from captioning.environment import describe_environment
from captioning.errors import ParamError
from captioning.features.store import FeatureStore
from captioning.finetune.cider import CiderD
from captioning.finetune.scst import (
    RewardImages,
    caption_words,
    finetune,
    greedy_rewards,
    mean_of_others,
    policy_loss,
    save_finetuned,
    scst_batch,
    scst_step,
)
from captioning.model.decoding import sample_captions
from captioning.scoring.metrics import CaptionScorer
from captioning.scoring.split import EvaluationImages
from captioning.text.vocabulary import END, SPECIALS, Vocabulary
from captioning.train.resume import ResumeFile
from captioning.train.validation import Validation

pytestmark = pytest.mark.usefixtures("torch_single_thread")
REPO = Path(__file__).resolve().parents[1]
VOCABULARY = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(len(SPECIALS), VOCAB)])
START, STOP = VOCABULARY.start, VOCABULARY.end


def log_prob_by_hand(decoder, image_features: torch.Tensor, tokens: list[int]) -> float:
    """log p(tokens | image), one image, word by word through decoder.step."""
    encoded = decoder.encode(image_features.unsqueeze(0))
    state = decoder.initial_state(encoded)
    words, total = torch.tensor([START]), 0.0
    for token in tokens:
        logits, state, _ = decoder.step(words, state, encoded)
        total += torch.log_softmax(logits.float(), dim=1)[0, token].item()
        words = torch.tensor([token])
    return total


@pytest.mark.parametrize("implementation", ["paper", "fast"])
def test_sampled_log_probs_are_the_models_log_probs_of_the_sampled_captions(make_decoder, features, implementation):
    decoder, images, k = make_decoder(implementation=implementation, seed=3), features(3), 4
    sampled = sample_captions(decoder, images, START, STOP, k, 6, torch.Generator().manual_seed(0))
    assert sampled.tokens.shape[0] == 3 * k and sampled.log_probs.requires_grad
    for row, (tokens, length) in enumerate(zip(sampled.tokens.tolist(), sampled.lengths.tolist())):
        kept = tokens[:length]
        assert STOP not in kept[:-1] and all(t == STOP for t in tokens[length:])
        assert length == len(tokens) or kept[-1] == STOP  # a caption that stopped keeps its <end>
        expected = log_prob_by_hand(decoder, images[row // k], kept)
        assert sampled.log_probs[row].item() == pytest.approx(expected, abs=1e-4)


def test_the_sampler_draws_from_the_models_distribution(make_decoder, features):
    decoder, image = make_decoder(seed=1), features(1)
    with torch.no_grad():
        encoded = decoder.encode(image)
        logits, _, _ = decoder.step(torch.tensor([START]), decoder.initial_state(encoded), encoded)
        expected = torch.softmax(logits, dim=1)[0]
        draws = 20000
        sampled = sample_captions(decoder, image, START, STOP, draws, 1, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(sampled.tokens[:, 0], minlength=VOCAB).float() / draws
    assert (frequencies - expected).abs().max().item() < 0.015  # ~7 standard deviations of a frequency here


def test_the_same_seed_gives_the_same_samples_and_another_seed_others(make_decoder, features):
    decoder, images = make_decoder(seed=2), features(2)
    first, again, other = (
        sample_captions(decoder, images, START, STOP, 5, 6, torch.Generator().manual_seed(seed)).tokens
        for seed in (7, 7, 8)
    )
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_mean_baseline_is_the_mean_reward_of_the_other_samples():
    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    assert mean_of_others(rewards).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]


def test_reward_captions_end_with_end_sampled_and_reference_alike(make_decoder, features, tmp_path, feature_file):
    from captioning.data.table import CaptionTable, ImageRecord

    table = CaptionTable("scenes", tmp_path, [ImageRecord("a.png", "train", ["W4 w5.", "w6"])])
    store = FeatureStore(feature_file(["a.png"], np.zeros((1, 5, 8))))
    assert RewardImages.from_split(table, store).references == [[["w4", "w5", END], ["w6", END]]]
    tokens, lengths = torch.tensor([[4, STOP, STOP], [5, 6, 7]]), torch.tensor([2, 3])
    assert caption_words(tokens, lengths, VOCABULARY) == [["w4", END], ["w5", "w6", "w7"]]


def deterministic_decoder(make_decoder, word: int):
    """A decoder whose every step puts (nearly) all probability on `word`."""
    decoder = make_decoder(seed=0)
    with torch.no_grad():
        decoder.output.weight.zero_()
        decoder.output.bias.fill_(-30.0)
        decoder.output.bias[word] = 30.0
    return decoder


@pytest.mark.parametrize("word", [STOP, 5])  # an immediate <end>; a caption that never ends
def test_with_the_greedy_baseline_a_sample_equal_to_the_greedy_caption_has_zero_advantage(make_decoder, features, word):
    decoder = deterministic_decoder(make_decoder, word)
    cider = CiderD([[["w5"] * 4], [["w6", END]]])
    params = repo_params("scst", samples=3, baseline="greedy", max_len=4)
    images = features(2)
    loss, values = scst_batch(decoder, images, np.array([0, 1]), cider, VOCABULARY, params, torch.Generator())
    assert values["reward"] > 0  # the captions do score: equal rewards, not two zeros
    assert values["reward"] == values["baseline"] and loss.item() == 0.0
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in decoder.parameters())

    other = make_decoder(seed=4)  # samples that differ from the greedy caption: a non-zero advantage
    loss, values = scst_batch(other, images, np.array([0, 1]), cider, VOCABULARY, params, torch.Generator())
    assert loss.item() != 0.0


def test_the_policy_gradient_raises_the_probability_of_the_caption_with_the_higher_reward(make_decoder, features):
    decoder, image = make_decoder(seed=5), features(1)
    better, worse = [4, 5, STOP], [6, 7, STOP]
    cider = CiderD([[["w4", "w5", END]], [["w8", END]]])
    rewards = cider.scores(
        [caption_words(torch.tensor([c]), torch.tensor([3]), VOCABULARY)[0] for c in (better, worse)], [0, 0]
    )
    assert rewards[0] > rewards[1]
    advantages = torch.from_numpy(rewards - mean_of_others(rewards[None, :])[0]).float()  # r - b, b the other's reward

    def log_probs() -> torch.Tensor:
        return torch.stack([_sequence_log_prob(decoder, image, c) for c in (better, worse)])

    before = log_probs().detach()
    optimizer = torch.optim.SGD(decoder.parameters(), lr=0.05)
    policy_loss(log_probs(), advantages).backward()
    optimizer.step()
    after = log_probs().detach()
    assert after[0] > before[0] and after[1] < before[1]


def _sequence_log_prob(decoder, image: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    encoded = decoder.encode(image)
    state = decoder.initial_state(encoded)
    words, total = torch.tensor([START]), torch.zeros(())
    for token in tokens:
        logits, state, _ = decoder.step(words, state, encoded)
        total = total + torch.log_softmax(logits, dim=1)[0, token]
        words = torch.tensor([token])
    return total


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_self_critical_steps_raise_the_mean_reward_on_a_toy(make_decoder, features, baseline):
    torch.manual_seed(0)
    decoder, images = make_decoder(seed=6), features(4)
    references = [[["w4", "w5", END]], [["w6", "w7", END]], [["w8", END]], [["w9", "w10", "w11", END]]]
    cider, rows = CiderD(references), np.arange(4)
    params = repo_params("scst", samples=6, baseline=baseline, max_len=5)

    def mean_reward() -> float:
        with torch.no_grad():
            sampled = sample_captions(decoder, images, START, STOP, 50, 5, torch.Generator().manual_seed(1))
        return float(
            cider.scores(caption_words(sampled.tokens, sampled.lengths, VOCABULARY), np.repeat(rows, 50)).mean()
        )

    before, generator = mean_reward(), torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.02)
    for _ in range(40):
        loss, _ = scst_batch(decoder, images, rows, cider, VOCABULARY, params, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mean_reward() > 2 * before


@pytest.fixture
def small_corpus(tmp_path, feature_file):
    from captioning.data.table import CaptionTable, ImageRecord

    names = [f"{split}{i}.png" for split in ("train", "val") for i in range(4)]
    words = ["w4 w5", "w6 w7", "w8", "w9 w10 w11"]
    records = [ImageRecord(n, n[:-5].rstrip("0123456789"), [words[int(n[-5])]]) for n in names]
    table = CaptionTable("scenes", tmp_path, records)
    values = np.random.default_rng(0).standard_normal((len(names), 5, 8))
    store = FeatureStore(feature_file(names, values))
    return RewardImages.from_split(table, store), EvaluationImages.from_split(table, store, "val"), store


def test_finetune_resumed_after_an_interruption_ends_as_an_uninterrupted_run(make_decoder, small_corpus, tmp_path):
    images, val, store = small_corpus
    params = repo_params("scst", epochs=3, lr=0.01, samples=3, baseline="mean", max_len=5, batch_size=2, step_size=1)
    cpu = torch.device("cpu")

    def run(resume_path, stop_at=None):
        decoder, logged = make_decoder(seed=7), []

        def on_epoch_end(epoch, values, is_best):
            if epoch == stop_at:
                raise KeyboardInterrupt  # as a kill would, after epoch stop_at - 1 was saved
            logged.append((epoch, {k: v for k, v in values.items() if "seconds" not in k}, is_best))

        resume = None if resume_path is None else ResumeFile(resume_path, "key")
        with CaptionScorer(meteor=False) as scorer:
            validation = Validation(val, store, VOCABULARY, scorer, params.max_len, cpu)
            best = finetune(
                decoder, images, store, VOCABULARY, validation, params, on_epoch_end=on_epoch_end, resume=resume
            )
        return decoder, best, logged

    straight, straight_best, straight_log = run(None)
    state = tmp_path / "scratch/state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(state, stop_at=2)
    assert state.is_file()
    resumed, resumed_best, resumed_log = run(state)
    assert [epoch for epoch, _, _ in straight_log] == [0, 1, 2, 3] and resumed_log == straight_log
    assert resumed_best == straight_best
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    kept = straight_best["epoch"]
    assert straight_best["cider"] == max(values["val_cider"] for _, values, _ in straight_log)
    assert straight_log[kept][2]  # the kept epoch is the one marked best

    cross_entropy = {"words": VOCABULARY.words, "feature_recipe": {"image_size": 64}, "epoch": 9}
    environment = describe_environment(torch.device("cpu"), "fp32")
    save_finetuned(tmp_path / "model.pt", resumed, cross_entropy, resumed_best, environment)
    loaded, payload = load_model(tmp_path / "model.pt")
    assert (
        payload["scst_epoch"] == kept
        and payload["epoch"] == 9
        and payload["validation"]["cider"] == straight_best["cider"]
        and payload["environment"] == environment
    )
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), resumed.state_dict().values()))


def test_finetune_is_the_same_with_the_features_in_ram_or_streamed(make_decoder, small_corpus):
    """train.feature_memory_gb, which the finetune stage obeys too, changes where the features are read from."""
    images, val, in_ram = small_corpus
    streamed = FeatureStore(in_ram.path, memory_budget_bytes=0)
    assert in_ram.in_memory is not None and streamed.in_memory is None
    params = repo_params("scst", epochs=2, lr=0.01, samples=3, baseline="greedy", max_len=5, batch_size=2)
    runs = []
    for store in (in_ram, streamed):
        decoder = make_decoder(seed=7)
        with CaptionScorer(meteor=False) as scorer:
            validation = Validation(val, store, VOCABULARY, scorer, params.max_len, torch.device("cpu"))
            best = finetune(decoder, images, store, VOCABULARY, validation, params, on_epoch_end=lambda *_: None)
        runs.append((best, decoder.state_dict()))
    (best_a, weights_a), (best_b, weights_b) = runs
    assert best_a == best_b and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_scst_params_are_validated_with_one_line_errors():
    assert repo_params("scst", epochs=0, baseline="mean", samples=2).epochs == 0
    cases = {
        "epochs": (-1, "scst.epochs must be an integer >= 0"),
        "lr": (0, "scst.lr must be a number > 0"),
        "baseline": ("critic", "scst.baseline must be one of greedy, mean"),
        "max_len": (0, "scst.max_len must be an integer >= 1"),
        "gamma": (1.5, "scst.gamma must be a number in (0, 1]"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ParamError, match=message.replace("(", r"\(").replace("[", r"\[")):
            repo_params("scst", **{key: value})
    with pytest.raises(ParamError, match=r"scst.samples must be an integer >= 2 \(the mean baseline"):
        repo_params("scst", baseline="mean", samples=1)


def test_the_stage_with_zero_epochs_passes_the_model_through_byte_for_byte(make_decoder, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scst"]["epochs"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    source = tmp_path / "models/cross_entropy.pt"
    source.parent.mkdir()
    save_model(source, make_decoder(), VOCABULARY.words, {"image_size": 64}, epoch=3, validation={"cider": 1.25})
    command = stage_command("finetune", input=source)
    environment = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=tmp_path, env=environment, check=True, capture_output=True)
    assert (tmp_path / "models/model.pt").read_bytes() == source.read_bytes()
    summary = yaml.safe_load((tmp_path / "metrics/finetune/metrics.json").read_text())
    assert summary["best_epoch"] == 0 and summary["best_val_cider"] == 1.25
    assert not (tmp_path / "scratch").exists()


@pytest.mark.parametrize("script", ["flickr30k.sh", "flickr8k.sh", "coco.sh"])
def test_the_real_data_presets_fine_tune_with_scst(script, tmp_path):
    from test_presets import preset_settings

    settings = dict(s.split("=", 1) for s in preset_settings(script, tmp_path) if s.startswith("scst."))
    scst = repo_params("scst", **{k.split(".")[1]: yaml.safe_load(v) for k, v in settings.items()})
    assert scst.epochs >= 10 and scst.samples == 5 and scst.lr <= 5e-5


@pytest.mark.parametrize("implementation", ["paper", "fast"])
def test_sampling_all_max_len_steps_gives_the_captions_of_stopping_early(make_decoder, features, implementation):
    """CUDA's default runs every step instead of reading a flag from the device at each: nothing else changes."""
    decoder, images, max_len = make_decoder(implementation=implementation, seed=4), features(3), 40
    stopped, full = (
        sample_captions(decoder, images, START, STOP, 5, max_len, torch.Generator().manual_seed(0), stop_early=stop)
        for stop in (True, False)
    )
    width = stopped.tokens.shape[1]
    assert width < max_len == full.tokens.shape[1]  # every caption ended early: the comparison means something
    assert torch.equal(full.tokens[:, :width], stopped.tokens) and (full.tokens[:, width:] == STOP).all()
    assert torch.equal(full.lengths, stopped.lengths) and torch.equal(full.log_probs, stopped.log_probs)


def test_the_greedy_reward_is_the_same_decoding_all_max_len_steps(make_decoder, features):
    decoder, images = make_decoder(seed=4), features(4)
    cider = CiderD([[["w4", "w5", END]], [["w6", END]], [["w4", END]], [["w7", "w7", END]]])
    for max_len in (3, 40):  # captions cut at max_len (no <end>), and captions that all ended
        stopped, full = (
            greedy_rewards(decoder, images, np.arange(4), cider, VOCABULARY, max_len, stop_early=stop)
            for stop in (True, False)
        )
        np.testing.assert_array_equal(stopped, full)


def test_an_scst_step_reads_only_the_sampled_and_greedy_captions_from_the_device(make_decoder, features):
    """As benchmarks/profile_step.py counts host syncs; decoding runs all max_len steps, as on CUDA."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from profile_step import SyncCounter

    decoder, images = make_decoder(seed=4), features(2)
    cider = CiderD([[["w4", "w5", END]], [["w6", END]]])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3, foreach=True)
    for baseline, reads in (("greedy", 2), ("mean", 1)):
        params = repo_params("scst", baseline=baseline, samples=3, max_len=6)
        step = [decoder, optimizer, images, np.arange(2), cider, VOCABULARY, params, torch.Generator(), False]
        scst_step(*step)  # Adam's step counters (host tensors unless fused) exist after the first step
        steps = [state["step"] for state in optimizer.state.values()]
        with SyncCounter(steps) as counter:
            loss, _ = scst_step(*step)
        assert counter.reads == {"tolist": reads} and loss.requires_grad is False
