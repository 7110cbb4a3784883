"""captioning/train/distributed.py and the DDP lines of train/cross_entropy.py: ranks' shares add up to
one-process training.

The slow test runs the real train stage with train.nproc_per_node=2 (torchrun, gloo on CPU) on a tiny
repository and checks it against a one-process run with the same global batch and seed, then evaluates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FEATURE_DIM, REGIONS, VOCAB
from repo_params import repo_params, repo_section
from tiny_repo import TINY, copy_repository, run, stage_command, write_params

from captioning.errors import ParamError
from captioning.features.store import FeatureStore
from captioning.params import parse_section
from captioning.train import distributed
from captioning.train.batching import CaptionSet, iterate_batches
from captioning.train.cross_entropy import caption_loss

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def random_batch(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions (size, 7) and lengths sorted longest first, as iterate_batches yields them."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.sort(torch.randint(3, 8, (size,), generator=generator), descending=True).values
    return torch.randint(4, VOCAB, (size, 7), generator=generator), lengths


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_the_shares_losses_and_gradients_add_up_to_the_whole_batch(make_decoder, features, attention):
    decoder = make_decoder(attention).train()
    region_features, (captions, lengths) = features(7), random_batch(7)
    whole = caption_loss(decoder, region_features, captions, lengths, alpha_c=1.5)
    whole.backward()
    expected = {name: p.grad.clone() for name, p in decoder.named_parameters()}
    decoder.zero_grad()

    counts = (int((lengths - 1).sum()), len(lengths))
    shares = []
    for rank in range(3):  # every 3rd caption, as iterate_batches shares a batch among 3 ranks
        rows = slice(rank, None, 3)
        shares.append(caption_loss(decoder, region_features[rows], captions[rows], lengths[rows], 1.5, counts))
        shares[-1].backward()  # gradients accumulate: DDP's average times the world size is this sum
    torch.testing.assert_close(sum(shares), whole)
    for name, p in decoder.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


def test_each_rank_takes_every_nth_caption_of_the_same_batches(feature_file):
    names = [f"img_{i}.png" for i in range(6)]
    store = FeatureStore(feature_file(names, np.zeros((6, REGIONS, FEATURE_DIM), dtype=np.float32)))
    lengths = np.array([5, 3, 7, 3, 5, 6, 4, 7, 3, 4, 6, 5, 3])
    captions = np.tile(np.arange(13)[:, None], (1, 8))  # each row holds its own index
    data = CaptionSet(captions, lengths, np.arange(13) % 6)

    def batches(rank: int, world: int) -> list[list[int]]:
        found = iterate_batches(data, store, 4, np.random.default_rng(0), torch.device("cpu"), rank, world)
        return [batch.captions[:, 0].tolist() for batch in found]

    alone = batches(0, 1)  # 4 + 4 + 4 + 1 captions
    shares = [batches(rank, 2) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 3, "the batch of one caption cannot be shared by two ranks"
    whole = [batch for batch in alone if len(batch) >= 2]
    assert [sorted(a + b) for a, b in zip(*shares)] == [sorted(batch) for batch in whole]
    for share in shares[0] + shares[1]:
        assert list(lengths[share]) == sorted(lengths[share], reverse=True)
    # each rank knows the whole batch's target tokens and captions without asking the other: no sync per step
    for rank in range(2):
        found = iterate_batches(data, store, 4, np.random.default_rng(0), torch.device("cpu"), rank, 2)
        counts = [batch.global_counts for batch in found]
        assert counts == [(int((lengths[batch] - 1).sum()), len(batch)) for batch in whole]
    alone_batches = iterate_batches(data, store, 4, np.random.default_rng(0), torch.device("cpu"))
    assert all(batch.global_counts is None for batch in alone_batches)


def test_one_node_uses_a_free_port_and_several_nodes_the_master():
    args = ["--model", "m.pt"]
    one = distributed.torchrun_command(repo_params("train", nproc_per_node=4), "stages.train", args)
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone", "-m", "stages.train", *args]
    params = repo_params("train", nproc_per_node=2, nnodes=3, node_rank=0, master_addr="10.0.0.1", master_port=1234)
    other = distributed.torchrun_command(params, "stages.train", [], node_rank=2)
    assert "--nnodes=3" in other and "--node_rank=2" in other and "--master_addr=10.0.0.1" in other
    assert "--master_port=1234" in other and "--standalone" not in other


def test_a_world_of_one_without_torchrun(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    world = distributed.setup()
    assert (world.rank, world.size, world.is_main) == (0, 1, True)
    assert distributed.broadcast({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"nnodes": 2, "node_rank": 2}, "train.node_rank"),
        ({"nproc_per_node": 0}, "train.nproc_per_node"),
        ({"nproc_per_node": 4, "nnodes": 2, "batch_size": 4}, "train.batch_size"),
        ({"master_port": 70000}, "train.master_port"),
    ],
)
def test_bad_distributed_params_name_the_key(values, key):
    with pytest.raises(ParamError) as raised:
        parse_section("train", repo_section("train", **values))
    assert raised.value.key == key


@pytest.fixture(scope="module")
def tiny_repo(tiny_upstream: Path, tmp_path_factory, one_thread_each) -> Path:
    repo = copy_repository(tiny_upstream, tmp_path_factory.mktemp("distributed") / "repo")  # data ... embeddings run
    # fp32 and no dropout: the two runs may differ only by the order of float sums
    write_params(repo, {"train": {**TINY["train"], "precision": "fp32"}})
    run(stage_command("train", model="models/one.pt", live="metrics/one"), repo)
    return repo


@pytest.mark.slow
def test_two_processes_train_as_one_and_the_pipeline_completes(tiny_repo: Path):
    assert TINY["model"]["dropout"] == 0
    write_params(tiny_repo, {"train": {"nproc_per_node": 2}})
    result = run(stage_command("train"), tiny_repo)
    assert "torch.distributed.run --nproc_per_node=2 --standalone" in result.stderr
    assert "2 process(es)" in result.stderr

    def losses(live: str) -> list[float]:
        rows = (tiny_repo / f"metrics/{live}/plots/metrics/train_loss.tsv").read_text().splitlines()[1:]
        return [float(row.split("\t")[1]) for row in rows]

    assert len(losses("train")) == TINY["train"]["epochs"]
    assert losses("train") == pytest.approx(losses("one"), rel=1e-5)
    one = torch.load(tiny_repo / "models/one.pt", weights_only=True)["state_dict"]
    two = torch.load(tiny_repo / "models/cross_entropy.pt", weights_only=True)["state_dict"]
    # The attention score's bias has a zero gradient in exact arithmetic (softmax ignores a shift), so
    # Adam turns its rounding noise into full-size steps: the one parameter that cannot match.
    for name in set(one) - {"context.score.bias"}:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-4, msg=name)
    assert not (tiny_repo / "scratch/train/state.pt").exists()

    run(stage_command("evaluate", model="models/cross_entropy.pt"), tiny_repo)
    metrics = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    assert {"bleu_4", "cider"} <= set(metrics)
