"""Training hard attention (Xu et al. 2015, section 4.1): the REINFORCE estimator's baseline and bookkeeping.

The model's side (sampling s_t ~ Multinoulli(alpha_t) in teacher forcing, log p(s|a), H[s]) and the
loss terms of Eq. 11-12 are in captioning/model/hard.py. Here: per batch, draw the randomness,
score each caption's log-likelihood log p(y|s,a) (the reward), add the Eq. 11-12 terms with the
moving-average baseline b, then move b towards the batch's mean reward; per epoch, report b and the
variance of the REINFORCE term (how noisy the attention's gradient is).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from captioning.model.hard import LocationDraws, hard_attention_loss
from captioning.model.paper import TeacherForcing
from captioning.params import TrainParams
from captioning.train import distributed


class MovingAverageBaseline:
    """b_k = decay b_{k-1} + (1 - decay) r_k, r_k the mean reward of batch k (section 4.1, decay 0.9).

    The paper does not say where b starts; here b_1 = r_1, so that the first batch's rewards are not
    measured from 0 (a log-likelihood of tens of nats would push every sampled location down at once).
    """

    def __init__(self, decay: float):
        self.decay, self.value = decay, None

    def update(self, mean_reward: float) -> None:
        self.value = mean_reward if self.value is None else self.decay * self.value + (1 - self.decay) * mean_reward

    def state_dict(self) -> dict:
        return {"decay": self.decay, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.value = state["decay"], state["value"]


def caption_log_likelihoods(scores: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log p(y | s, a) per caption (B,) from teacher forcing's time-major scores (N, V) and targets (N,)."""
    steps = lengths - 1
    step_index = torch.arange(int(steps.max()), device=lengths.device)
    running = steps.unsqueeze(0) > step_index.unsqueeze(1)  # (T, B): caption b predicts a word at step t
    caption_of_target = running.nonzero()[:, 1]  # (N,), time-major like the targets
    token_log_probs = -nn.functional.cross_entropy(scores.float(), targets, reduction="none")  # (N,)
    return torch.zeros(len(lengths), device=scores.device).index_add(0, caption_of_target, token_log_probs)


class HardAttentionTraining:
    """train.hard_* params, the baseline (persisting across batches and epochs) and the epoch's statistics."""

    def __init__(self, expected_prob: float, baseline_decay: float, lambda_r: float, lambda_e: float):
        self.expected_prob, self.lambda_r, self.lambda_e = expected_prob, lambda_r, lambda_e
        self.baseline = MovingAverageBaseline(baseline_decay)
        self._reset_statistics()

    @classmethod
    def from_params(cls, params: TrainParams) -> HardAttentionTraining:
        return cls(params.hard_expected_prob, params.hard_baseline_decay, params.hard_lambda_r, params.hard_lambda_e)

    def _reset_statistics(self) -> None:
        self.sampled, self.term_sum, self.term_square_sum = 0, 0.0, 0.0

    def draw(self, lengths: torch.Tensor) -> LocationDraws:
        return LocationDraws.draw(lengths, self.expected_prob)

    def loss_terms(self, forced: TeacherForcing, lengths: torch.Tensor, draws: LocationDraws, tokens: int):
        """Eq. 11-12's terms for this batch (their gradient; their value is 0), measured from the baseline
        before it; then the baseline's update.

        The rewards are the captions' log-likelihoods under their sampled locations; the baseline
        moves by their mean over the (global) batch's sampling captions.
        """
        rewards = caption_log_likelihoods(forced.scores, forced.targets, lengths).detach()  # (B,)
        sampled = ~draws.expected
        reward_sum = distributed.sum_over_ranks(rewards[sampled].sum().item(), rewards.device)
        count = distributed.sum_over_ranks(float(sampled.sum().item()), rewards.device)
        batch_mean = reward_sum / count if count else None
        baseline = self.baseline.value if self.baseline.value is not None else (batch_mean or 0.0)
        log_probs, entropies = forced.location_log_probs, forced.location_entropies
        loss = hard_attention_loss(rewards, log_probs, entropies, baseline, self.lambda_r, self.lambda_e, tokens)
        terms = (self.lambda_r * (rewards - baseline) * log_probs.detach())[sampled].double()
        self.sampled += int(sampled.sum())
        self.term_sum += terms.sum().item()
        self.term_square_sum += (terms**2).sum().item()
        if batch_mean is not None:
            self.baseline.update(batch_mean)
        # Only the terms' gradient is the estimator; their value (a reward times a log-probability) is no
        # loss. Left out of the value, the reported loss stays -log p(y|s,a), comparable with soft attention's.
        return loss - loss.detach()

    def epoch_values(self, device: torch.device) -> dict[str, float]:
        """The baseline now and the variance of lambda_r (log p(y|s,a) - b) log p(s|a) over the epoch's samples."""
        statistics = (self.sampled, self.term_sum, self.term_square_sum)
        count, total, squares = (distributed.sum_over_ranks(float(value), device) for value in statistics)
        self._reset_statistics()
        mean = total / count if count else math.nan
        variance = squares / count - mean**2 if count else math.nan
        baseline = math.nan if self.baseline.value is None else self.baseline.value
        return {"hard_baseline": baseline, "reinforce_variance": variance}
