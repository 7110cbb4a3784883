"""Hard attention (section 4.1): sampled locations, the REINFORCE estimator and its baseline.

That the fast module equals the literal one under hard attention too is tests/test_fast.py's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import EMBED, FEATURE_DIM, HIDDEN, REGIONS
from repo_params import repo_params
from scipy.stats import chisquare
from test_cross_entropy import VOCABULARY, FakeScorer, tiny_task  # noqa: F401 (a fixture)
from test_paper import LENGTHS, random_captions
from torch import nn

from captioning.model.decoding import beam_search, greedy_decode
from captioning.model.hard import LocationDraws, sample_locations
from captioning.train.cross_entropy import caption_loss, feature_statistics, fit
from captioning.train.hard_attention import HardAttentionTraining, MovingAverageBaseline, caption_log_likelihoods
from captioning.train.resume import ResumeFile
from captioning.train.validation import Validation

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def hard_training(expected_prob=0.5, decay=0.9, lambda_r=1.0, lambda_e=0.002) -> HardAttentionTraining:
    return HardAttentionTraining(expected_prob, decay, lambda_r, lambda_e)


def same_parameters(make_decoder, implementation: str, attentions=("soft", "hard"), **options):
    first, *others = [make_decoder(a, implementation=implementation, **options) for a in attentions]
    for other in others:
        other.load_state_dict(first.state_dict())
    return [first, *others]


def seeded_draws(lengths: torch.Tensor, seed: int, expected_prob: float = 0.5) -> LocationDraws:
    torch.manual_seed(seed)
    return LocationDraws.draw(lengths, expected_prob)


def gradients(decoder: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in decoder.named_parameters() if p.grad is not None}


# --- the model's side: s_t ~ Multinoulli(alpha_t), z_t = beta_t a_{s_t} -----------------------------


def test_sampled_locations_have_the_distribution_alpha():
    alpha = torch.tensor([[0.05, 0.4, 0.0, 0.25, 0.3]])
    draws = 20000
    uniforms = torch.rand(draws, generator=torch.Generator().manual_seed(0))
    locations = sample_locations(alpha.expand(draws, -1), uniforms)
    counts = np.bincount(locations.numpy(), minlength=5)
    assert counts[2] == 0  # a region of weight 0 is never chosen
    kept = alpha[0] > 0
    statistic, p_value = chisquare(counts[kept.numpy()], (alpha[0][kept] * draws).numpy())
    assert p_value > 1e-3, (counts, statistic)
    # and it is not merely close to uniform: a wrong inversion (e.g. reversed regions) is rejected
    assert chisquare(counts[::-1][kept.numpy()], (alpha[0][kept] * draws).numpy()).pvalue < 1e-6


def test_the_locations_drawn_in_training_follow_the_models_alpha(make_decoder, features):
    decoder = make_decoder("hard", implementation="paper").train()
    region_features, lengths = features(1).expand(4000, -1, -1), torch.full((4000,), 2)
    captions = torch.ones(4000, 2, dtype=torch.long)
    encoded = decoder.encode(region_features[:1])
    alpha = decoder.context(encoded.keys, decoder.initial_state(encoded)[0])  # alpha_0 of the one image: (1, L)
    draws = seeded_draws(lengths, seed=3, expected_prob=0.0)
    forced = decoder(region_features, captions, lengths, draws)
    locations = sample_locations(alpha.expand(4000, -1), draws.uniforms[0])
    # log p(s_0 | a) of each caption is log alpha at its drawn region
    torch.testing.assert_close(forced.location_log_probs, alpha[0].log()[locations])
    counts = np.bincount(locations.numpy(), minlength=REGIONS)
    probabilities = alpha[0].detach().double().numpy()
    assert chisquare(counts, probabilities / probabilities.sum() * 4000).pvalue > 1e-3


def test_a_sampling_caption_reads_the_sampled_regions_feature_gated_by_beta(make_decoder, features):
    decoder = make_decoder("hard", implementation="paper")
    region_features, words = features(2), torch.tensor([3, 8])
    encoded = decoder.encode(region_features)
    state = decoder.initial_state(encoded)
    uniforms, expected = torch.tensor([0.3, 0.9]), torch.tensor([False, True])
    weights = decoder.context(encoded.keys, state[0])
    location = sample_locations(weights, uniforms)
    regions = decoder.standardise(region_features)
    context = torch.stack([regions[0, location[0]], (weights[1].unsqueeze(1) * regions[1]).sum(0)])
    beta = torch.sigmoid(decoder.gate(state[0]))
    cell = nn.LSTMCell(EMBED + FEATURE_DIM, HIDDEN)
    cell.load_state_dict(decoder.lstm.state_dict())
    hidden, memory = cell(torch.cat([decoder.embedding(words), beta * context], dim=1), state)
    _, (step_hidden, step_memory), step_weights = decoder.step(words, state, encoded, (uniforms, expected))
    torch.testing.assert_close(step_weights, weights)  # the step still reports alpha_t
    torch.testing.assert_close(step_hidden, hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step_memory, memory, rtol=1e-5, atol=1e-5)


def test_draws_take_the_expected_context_with_the_given_probability():
    lengths = torch.full((20000,), 5)
    assert abs(seeded_draws(lengths, seed=0, expected_prob=0.5).expected.float().mean() - 0.5) < 0.02
    assert seeded_draws(lengths, seed=0, expected_prob=1.0).expected.all()
    assert not seeded_draws(lengths, seed=0, expected_prob=0.0).expected.any()
    assert seeded_draws(lengths, seed=0).uniforms.shape == (4, 20000)


# --- hard training reduces to soft training ---------------------------------------------------------


@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("implementation", ["paper", "fast"])
def test_expected_context_always_and_no_reinforce_or_entropy_is_soft_training_exactly(
    make_decoder, features, implementation, deep_output
):
    soft, hard = same_parameters(make_decoder, implementation, deep_output=deep_output)
    region_features, captions, lengths = features(4), random_captions(LENGTHS, seed=2), torch.tensor(LENGTHS)
    soft_loss = caption_loss(soft.train(), region_features, captions, lengths, alpha_c=1.0)
    estimator = hard_training(expected_prob=1.0, lambda_r=0.0, lambda_e=0.0)
    hard_loss = caption_loss(hard.train(), region_features, captions, lengths, alpha_c=1.0, hard=estimator)
    soft_loss.backward()
    hard_loss.backward()
    assert torch.equal(hard_loss, soft_loss)
    soft_gradients, hard_gradients = gradients(soft), gradients(hard)
    assert soft_gradients.keys() == hard_gradients.keys() and len(soft_gradients) == len(list(soft.parameters()))
    for name, gradient in soft_gradients.items():
        assert torch.equal(hard_gradients[name], gradient), name


def test_fitting_hard_with_the_expected_context_always_fits_soft_exactly(make_decoder, tiny_task):  # noqa: F811
    results = [
        run_fit(make_decoder, tiny_task, attention, epochs=2, hard_expected_prob=1.0, hard_lambda_r=0, hard_lambda_e=0)
        for attention in ("soft", "hard")
    ]
    (soft_decoder, soft_epochs), (hard_decoder, hard_epochs) = results
    assert [e["train_loss"] for e in hard_epochs] == [e["train_loss"] for e in soft_epochs]
    for name, tensor in soft_decoder.state_dict().items():
        assert torch.equal(hard_decoder.state_dict()[name], tensor), name
    assert "hard_baseline" not in soft_epochs[0] and math.isnan(hard_epochs[0]["reinforce_variance"])


def test_decoding_a_hard_model_reads_the_expected_context(make_decoder, features):
    soft, hard = same_parameters(make_decoder, "fast")
    region_features = features(3) * 3
    assert greedy_decode(hard, region_features, 1, 2, 6).tokens == greedy_decode(soft, region_features, 1, 2, 6).tokens
    hard_beams, soft_beams = (beam_search(d, region_features, 1, 2, 3, 6, 1.0) for d in (hard, soft))
    assert hard_beams.tokens == soft_beams.tokens
    for hard_weights, soft_weights in zip(hard_beams.weights, soft_beams.weights):  # the figures' attention
        assert np.array_equal(np.asarray(hard_weights), np.asarray(soft_weights))
    # in eval mode caption_loss samples nothing even when given the estimator (validation-style use)
    captions, lengths = random_captions(LENGTHS, seed=2), torch.tensor(LENGTHS)
    estimator = hard_training(expected_prob=0.0)
    soft_loss = caption_loss(soft, features(4), captions, lengths, alpha_c=0.0)
    assert torch.equal(caption_loss(hard, features(4), captions, lengths, alpha_c=0.0, hard=estimator), soft_loss)
    assert estimator.baseline.value is None


# --- the REINFORCE estimator (Eq. 11-12) ---------------------------------------------------------


def first_step_alpha(decoder, region_features) -> torch.Tensor:
    with torch.no_grad():
        encoded = decoder.encode(region_features)
        return decoder.context(encoded.keys, decoder.initial_state(encoded)[0])[0]  # (L,)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_a_reward_above_the_baseline_raises_the_sampled_locations_probability(make_decoder, features, advantage):
    """One step of a one-word caption: log p(s|a) = log alpha_{0, s_0}, moved by lambda_r (r - b) alone."""
    decoder = make_decoder("hard", implementation="paper").train()
    region_features, captions, lengths = features(1) * 3, torch.tensor([[1, 4]]), torch.tensor([2])
    draws = LocationDraws(torch.tensor([[0.6]]), torch.tensor([False]))  # (T, B)
    estimator = hard_training(expected_prob=0.0, lambda_e=0.0)
    estimator.draw = lambda lengths: draws
    forced = decoder(region_features, captions, lengths, draws)
    reward = caption_log_likelihoods(forced.scores, forced.targets, lengths).item()
    estimator.baseline.value = reward - advantage
    alpha = first_step_alpha(decoder, region_features)
    location = sample_locations(alpha.unsqueeze(0), torch.tensor([0.6])).item()
    optimizer = torch.optim.SGD(decoder.parameters(), lr=0.01)
    caption_loss(decoder, region_features, captions, lengths, alpha_c=0.0, hard=estimator).backward()
    optimizer.step()
    change = first_step_alpha(decoder, region_features)[location] - alpha[location]
    assert change * advantage > 1e-5, (alpha[location], change)


def test_a_sampled_context_gives_the_attention_no_gradient_of_its_own(make_decoder, features):
    decoder = make_decoder("hard", implementation="fast").train()
    captions, lengths = random_captions(LENGTHS, seed=2), torch.tensor(LENGTHS)
    estimator = hard_training(expected_prob=0.0, lambda_r=0.0, lambda_e=0.0)
    caption_loss(decoder, features(4), captions, lengths, alpha_c=0.0, hard=estimator).backward()
    for name, parameter in decoder.context.named_parameters():  # only the REINFORCE and entropy terms reach alpha
        assert parameter.grad is None or not parameter.grad.any(), name
    assert decoder.gate.weight.grad.abs().sum() > 0  # beta still gates the sampled region


def test_the_entropy_term_flattens_attention(make_decoder, features):
    decoder = make_decoder("hard", implementation="paper").train()
    region_features, captions, lengths = features(2) * 3, random_captions([4, 4], seed=1), torch.tensor([4, 4])
    estimator = hard_training(expected_prob=0.0, lambda_r=0.0, lambda_e=1.0)
    draws = seeded_draws(lengths, seed=0, expected_prob=0.0)
    entropy_before = decoder(region_features, captions, lengths, draws).location_entropies.sum()
    optimizer = torch.optim.SGD(decoder.context.parameters(), lr=0.5)
    estimator.draw = lambda lengths: draws
    caption_loss(decoder, region_features, captions, lengths, alpha_c=0.0, hard=estimator).backward()
    optimizer.step()
    assert decoder(region_features, captions, lengths, draws).location_entropies.sum() > entropy_before


def test_caption_log_likelihoods_sum_each_captions_token_log_probabilities(make_decoder, features):
    decoder = make_decoder("hard", implementation="paper")
    captions, lengths = random_captions(LENGTHS, seed=0), torch.tensor(LENGTHS)
    forced = decoder(features(4), captions, lengths)
    log_probs = torch.log_softmax(forced.scores, dim=1)
    order = [(row, t) for t in range(max(LENGTHS) - 1) for row, n in enumerate(LENGTHS) if t < n - 1]
    expected = torch.zeros(len(LENGTHS))
    for index, (row, t) in enumerate(order):
        expected[row] += log_probs[index, captions[row, t + 1]]
    torch.testing.assert_close(caption_log_likelihoods(forced.scores, forced.targets, lengths), expected)


# --- the moving-average baseline --------------------------------------------------------------------


def test_the_baseline_is_a_moving_average_of_the_batch_rewards():
    baseline = MovingAverageBaseline(0.9)
    assert baseline.value is None
    for reward, expected in [(-10.0, -10.0), (-20.0, -11.0), (0.0, -9.9)]:  # b_1 = r_1, then 0.9 b + 0.1 r
        baseline.update(reward)
        assert baseline.value == pytest.approx(expected)
    restored = MovingAverageBaseline(0.5)
    restored.load_state_dict(baseline.state_dict())
    assert (restored.decay, restored.value) == (0.9, baseline.value)


def test_each_batch_is_measured_from_the_baseline_before_it_then_moves_it(make_decoder, features):
    decoder = make_decoder("hard", implementation="fast").train()
    captions, lengths, region_features = random_captions(LENGTHS, seed=0), torch.tensor(LENGTHS), features(4)
    estimator = hard_training(expected_prob=0.5, decay=0.9, lambda_r=2.0, lambda_e=0.0)
    variances, terms = [], []
    patterns = [[False, True, False, True], [True, False, False, False], [False, False, True, True]]
    for batch, pattern in enumerate(patterns):  # which captions read the expected context
        uniforms = torch.rand(max(LENGTHS) - 1, len(LENGTHS), generator=torch.Generator().manual_seed(batch))
        draws = LocationDraws(uniforms, torch.tensor(pattern))
        estimator.draw = lambda lengths, draws=draws: draws
        previous = estimator.baseline.value
        loss = caption_loss(decoder, region_features, captions, lengths, alpha_c=0.0, hard=estimator)
        forced = decoder(region_features, captions, lengths, draws)
        rewards = caption_log_likelihoods(forced.scores, forced.targets, lengths).detach()
        sampled = ~draws.expected
        mean_reward = rewards[sampled].mean().item()
        start = mean_reward if previous is None else previous
        assert estimator.baseline.value == pytest.approx(
            mean_reward if previous is None else 0.9 * previous + 0.1 * mean_reward, rel=1e-6
        )
        cross_entropy = nn.functional.cross_entropy(forced.scores, forced.targets)
        reinforce = -(2.0 * (rewards - start) * forced.location_log_probs).sum() / len(forced.targets)
        torch.testing.assert_close(loss, cross_entropy)  # the reported value: -log p(y|s,a) per token
        parameters = list(decoder.parameters())
        for got, expected in zip(
            torch.autograd.grad(loss, parameters), torch.autograd.grad(cross_entropy + reinforce, parameters)
        ):
            torch.testing.assert_close(got, expected)  # the gradient: Eq. 12's
        terms.append((2.0 * (rewards - start) * forced.location_log_probs.detach())[sampled])
        if batch == 1:
            variances.append(estimator.epoch_values(torch.device("cpu")))
            terms_of_epoch = torch.cat(terms).double()
            assert variances[0]["reinforce_variance"] == pytest.approx(terms_of_epoch.var(unbiased=False).item())
            terms = []
    last = estimator.epoch_values(torch.device("cpu"))
    assert last["reinforce_variance"] == pytest.approx(torch.cat(terms).double().var(unbiased=False).item(), abs=1e-9)
    assert last["hard_baseline"] == estimator.baseline.value


# --- fit: the baseline persists across epochs and through a resume ----------------------------------


def run_fit(make_decoder, tiny_task, attention, resume_path=None, **overrides):  # noqa: F811
    train, val, store = tiny_task
    options = dict(lr=0.01, epochs=3, batch_size=4, step_size=2, seed=0, precision="fp32", val_max_len=5, alpha_c=0.0)
    params = repo_params("train", **{**options, **overrides})
    decoder = make_decoder(attention)
    decoder.set_feature_statistics(*feature_statistics(store, np.arange(8)))
    epochs = []
    validation = Validation(val, store, VOCABULARY, FakeScorer(), params.val_max_len, torch.device("cpu"))
    resume = None if resume_path is None else ResumeFile(resume_path, "hard")
    fit(
        decoder,
        train,
        store,
        validation,
        params,
        on_epoch_end=lambda _, values, __: epochs.append(values),
        resume=resume,
    )
    return decoder, epochs


def test_a_resumed_hard_run_ends_as_an_uninterrupted_one(make_decoder, tiny_task, tmp_path):  # noqa: F811
    straight, straight_epochs = run_fit(make_decoder, tiny_task, "hard", epochs=3)
    run_fit(make_decoder, tiny_task, "hard", resume_path=tmp_path / "state.pt", epochs=2)  # stopped after epoch 2
    resumed, resumed_epochs = run_fit(make_decoder, tiny_task, "hard", resume_path=tmp_path / "state.pt", epochs=3)
    assert torch.load(tmp_path / "state.pt", weights_only=True)["hard_baseline"]["value"] is not None
    keys = ("train_loss", "hard_baseline", "reinforce_variance")
    assert [[e[k] for k in keys] for e in resumed_epochs] == [[e[k] for k in keys] for e in straight_epochs]
    baselines = [e["hard_baseline"] for e in straight_epochs]
    assert all(b < 0 for b in baselines) and len(set(baselines)) == 3  # a log-likelihood, moving every epoch
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


# End to end, through `dvc exp run -S model.attention=hard`: tests/test_pipeline.py's experiment test.
