"""A walkthrough of Show, Attend and Tell: one image through the project's real code, tensor by tensor.

Run it from the repository root (after `make setup`, or `pip install -e .`):

    python docs/walkthrough.py             # models/model.pt if it exists, else a tiny random model
    python docs/walkthrough.py --model models/model.pt --image data/images/scene_000000.png --out attention.png

Read it top to bottom beside captioning/model/paper.py and the paper (Xu et al. 2015, section 3.1.2): each
section prints the tensors it makes, their shapes and a few values. docs/walkthrough.md is its output on the
default model, with the equations. Nothing is downloaded and nothing in the repository is written: the figure
goes to --out (by default into the system's temporary folder).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captioning.checkpoint import load_model
from captioning.data.images import load_rgb, resize_to_array
from captioning.data.scenes import describe, draw_scene, sample_objects
from captioning.device import autocast, resolve_precision
from captioning.features.encoder import build_encoder
from captioning.features.extract import encoder_fingerprint
from captioning.features.recipe import FeatureRecipe
from captioning.model import CaptionDecoder, DecoderConfig
from captioning.model.decoding import beam_search
from captioning.reports.figures import attention_figure
from captioning.text.vocabulary import SPECIALS, Vocabulary

DEFAULT_MODEL = Path("models/model.pt")
TINY_WORDS = [*SPECIALS, "a", "large", "small", "red", "blue", "green", "circle", "square", "triangle", "at", "the"]
TINY_WORDS += ["top", "bottom", "left", "right", "center", "and"]
TINY_RECIPE = {
    "weights": "none",
    "imagenet_variant": "IMAGENET1K_V2",
    "seed": 0,
    "image_size": 224,
    "precision": "fp32",
}


def show(name: str, tensor: torch.Tensor, values: int = 4) -> None:
    """One line per tensor: its name, shape and first few values."""
    flat = tensor.detach().float().flatten()[:values].tolist()
    print(f"  {name:<38} {str(tuple(tensor.shape)):<16} {' '.join(f'{v:+.4f}' for v in flat)}")


def section(title: str) -> None:
    print(f"\n== {title}")


def tiny_decoder() -> tuple[CaptionDecoder, list[str]]:
    """A randomly initialised soft-attention decoder (16-d), as the tests use: the code runs, the words are noise."""
    torch.manual_seed(0)
    config = DecoderConfig(
        vocab_size=len(TINY_WORDS),
        embed_dim=8,
        feature_dim=2048,
        decoder_dim=16,
        attention_dim=16,
        dropout=0.0,
        attention="soft",
        deep_output=False,
    )
    return CaptionDecoder(config).eval(), TINY_WORDS


def default_image(seed: int) -> tuple[Image.Image, str]:
    """A scene of the embedded default dataset, drawn here (captioning/data/scenes.py), and its canonical caption."""
    rng = random.Random(f"walkthrough-{seed}")
    objects = sample_objects(rng, 224, 1, 2)
    return draw_scene(objects, 224, rng), describe(objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help=f"a model file (default: {DEFAULT_MODEL} if it exists)")
    parser.add_argument("--tiny", action="store_true", help="a tiny randomly initialised model, whatever exists")
    parser.add_argument("--image", type=Path, help="default: a generated scene like the default dataset's")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "walkthrough_attention.png")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)  # nothing here trains

    # ---------------------------------------------------------------------------------------------------------------
    # 0. The model file: the decoder's parameters, its vocabulary, and the recipe of the features it was trained on.
    #    implementation="paper" loads the literal model (captioning/model/paper.py); fast.py computes the same.
    # ---------------------------------------------------------------------------------------------------------------
    section("0. the model")
    model_path = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() and not args.tiny else None)
    if model_path is not None and not args.tiny:
        if not model_path.is_file():
            print(f"error: {model_path}: model file not found (train one, or leave out --model)", file=sys.stderr)
            return 1
        decoder, payload = load_model(model_path, implementation="paper")
        words, recipe = payload["words"], FeatureRecipe.from_dict(payload["feature_recipe"])
        print(f"  {model_path}: {type(decoder).__name__}, trained (epoch {payload.get('epoch', '?')})")
    else:
        decoder, words = tiny_decoder()
        recipe = FeatureRecipe.from_dict({**TINY_RECIPE, "encoder_fingerprint": ""})
        print("  no model file: a tiny randomly initialised CaptionDecoder (its words are noise)")
    vocabulary = Vocabulary(words)
    config = decoder.config
    print(
        f"  vocabulary V = {len(vocabulary)}, words E = {config.embed_dim}, LSTM H = {config.decoder_dim}, "
        f"attention A = {config.attention_dim}, attention: {config.attention}, deep output: {config.deep_output}"
    )
    if config.attention != "soft":
        print(f"error: this walkthrough follows soft attention; the model has {config.attention!r}", file=sys.stderr)
        return 1

    # ---------------------------------------------------------------------------------------------------------------
    # 1. The encoder: the frozen ResNet of the features stage (ResNet50 by default), rebuilt from the recipe the model
    #    records (seeded random weights when features.weights is none). An image becomes its last convolutional map,
    #    2048 x 7 x 7, read as L = 49 regions a_i of D = 2048 features.
    # ---------------------------------------------------------------------------------------------------------------
    section("1. encoder: image -> 49 regions of 2048 features")
    if recipe.weights == "imagenet" and not _imagenet_weights_cached(recipe.encoder, recipe.imagenet_variant):
        print("error: the model's encoder needs ImageNet weights that are not cached here", file=sys.stderr)
        return 1
    if args.image is not None:
        image, truth = load_rgb(args.image), None
        print(f"  image: {args.image} ({image.width} x {image.height})")
    else:
        image, truth = default_image(0)
        print(f"  image: a generated scene ({image.width} x {image.height}): {truth!r}")
    encoder = build_encoder(recipe.weights, recipe.seed, recipe.imagenet_variant, recipe.encoder)
    fingerprint = encoder_fingerprint(encoder)
    if recipe.encoder_fingerprint and fingerprint != recipe.encoder_fingerprint:  # the tiny model records none
        print(f"error: the rebuilt encoder is not the one {model_path} was trained with", file=sys.stderr)
        return 1
    print(f"  ResNet50, weights={recipe.weights}, seed {recipe.seed}, {recipe.precision}, fingerprint {fingerprint}")
    pixels = torch.from_numpy(resize_to_array(image, recipe.image_size)).unsqueeze(0)  # (1, 3, S, S) uint8
    show("pixels (B, 3, S, S) uint8", pixels)
    # FrozenEncoder.forward: ImageNet normalisation, ResNet50 without its pooling and classifier (`body`), then the
    # (B, 2048, 7, 7) map flattened to (B, 49, 2048). A hook keeps the map on its way through.
    maps = []
    hook = encoder.body.register_forward_hook(lambda module, inputs, output: maps.append(output))
    cpu = torch.device("cpu")
    with autocast(cpu, resolve_precision(recipe.precision, cpu)):  # the precision the features were made at
        features = encoder(pixels).to(torch.float16)  # the features stage stores float16: (1, 49, 2048)
    hook.remove()
    feature_map = maps[0]
    show("ResNet50's last map (B, D, 7, 7)", feature_map)
    assert torch.equal(features, feature_map.flatten(2).transpose(1, 2).to(torch.float16))  # region i: row i // 7
    print(f"  regions a: {features.shape[1]} x {features.shape[2]} (the 7 x 7 map read row by row)")
    show("features (B, L, D) float16", features)

    # ---------------------------------------------------------------------------------------------------------------
    # 2. Standardisation and the initial state. Each channel is standardised with the training set's statistics
    #    (kept in the model as buffers), then h_0 = tanh(f_init,h(mean_i a_i)), c_0 = tanh(f_init,c(mean_i a_i)).
    # ---------------------------------------------------------------------------------------------------------------
    section("2. standardisation, h_0 and c_0")
    show("feature_mean (D,)", decoder.feature_mean)
    show("feature_std (D,)", decoder.feature_std)
    if not decoder.feature_mean.any():
        print("  (an untrained model's statistics are 0 and 1: standardising changes nothing)")
    regions = (features.float() - decoder.feature_mean) / decoder.feature_std  # (1, 49, 2048)
    show("standardised a (B, L, D)", regions)
    mean_region = regions.mean(dim=1)  # (1, 2048)
    show("mean_i a_i (B, D)", mean_region)
    h0 = torch.tanh(decoder.init_h(mean_region))  # (1, H)
    c0 = torch.tanh(decoder.init_c(mean_region))  # (1, H)
    show("h_0 (B, H)", h0)
    show("c_0 (B, H)", c0)

    # ---------------------------------------------------------------------------------------------------------------
    # 3. One decoding step, t = 1, written out with the model's own modules; y_0 is <start>.
    # ---------------------------------------------------------------------------------------------------------------
    section("3. one step, written out")
    attention = decoder.context  # SoftAttention: W_f, W_h, v
    keys = attention.feature_projection(regions)  # W_f a_i, once per image: (1, 49, A)
    show("W_f a_i (B, L, A)", keys)
    queried = attention.hidden_projection(h0)  # W_h h_0: (1, A)
    show("W_h h_0 (B, A)", queried)
    scores_e = attention.score(torch.tanh(keys + queried.unsqueeze(1))).squeeze(2)  # Eq. 4, e_1i: (1, 49)
    show("e_1 = v^T tanh(..) (B, L)  Eq. 4", scores_e)
    alpha = torch.softmax(scores_e, dim=1)  # Eq. 5: (1, 49), sums to 1
    show("alpha_1 = softmax(e_1) (B, L)  Eq. 5", alpha)
    side = int(alpha.shape[1] ** 0.5)
    peak = int(alpha.argmax())
    print(f"  alpha_1 sums to {float(alpha.sum()):.4f}; largest {float(alpha.max()):.4f} (uniform: {1 / 49:.4f})")
    print(f"  at region {peak} = row {peak // side}, column {peak % side} of the {side} x {side} grid")
    beta = torch.sigmoid(decoder.gate(h0))  # the gate beta_1 = sigmoid(f_beta(h_0)): (1, 1)
    show("beta_1 (B, 1)", beta)
    context = beta * (alpha.unsqueeze(2) * regions).sum(dim=1)  # Eq. 6, z_1 = beta_1 sum_i alpha_1i a_i: (1, D)
    show("z_1 (B, D)  Eq. 6", context)
    start = torch.tensor([vocabulary.start])  # y_0
    embedded = decoder.embedding(start)  # E y_0: (1, E)
    show("E y_0 (B, E)", embedded)
    # Eq. 1-3, nn.LSTMCell's gates (PyTorch's order: input, forget, cell, output) on [E y_0; z_1] and h_0
    lstm = decoder.lstm
    gates = (
        torch.cat([embedded, context], dim=1) @ lstm.weight_ih.T + lstm.bias_ih + h0 @ lstm.weight_hh.T + lstm.bias_hh
    )
    i, f, g, o = gates.chunk(4, dim=1)  # each (1, H)
    c1 = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
    h1 = torch.sigmoid(o) * torch.tanh(c1)
    show("h_1 (B, H)  Eq. 1-3", h1)
    show("c_1 (B, H)", c1)
    if config.deep_output:  # Eq. 7 with a tanh: L_o tanh(E y_0 + L_h h_1 + L_z z_1)
        deep = torch.tanh(embedded + decoder.output_hidden(h1) + decoder.output_context(context))
        word_scores = decoder.output(deep)
    else:  # the default: L_o h_1 (dropout does nothing in eval mode)
        word_scores = decoder.output(h1)
    show("word scores (B, V)", word_scores)
    probabilities = torch.softmax(word_scores, dim=1)
    top = probabilities[0].topk(min(3, len(vocabulary)))
    ranked = ", ".join(f"{vocabulary.words[w]!r} {p:.3f}" for p, w in zip(top.values.tolist(), top.indices.tolist()))
    print(f"  most likely first words: {ranked}")

    # The same step as the decoder runs it (decoding and training call nothing else): equal to the lines above.
    encoded = decoder.encode(features)
    step_scores, (step_h, step_c), step_alpha = decoder.step(start, decoder.initial_state(encoded), encoded)
    pairs = [(word_scores, step_scores), (h1, step_h), (c1, step_c), (alpha, step_alpha)]
    difference = max(float((mine - theirs).abs().max()) for mine, theirs in pairs)
    assert all(torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5) for mine, theirs in pairs), difference
    print(
        f"  step written out == decoder.step: scores, h_1, c_1, alpha_1 all close (largest difference {difference:.1e})"
    )

    # ---------------------------------------------------------------------------------------------------------------
    # 4. The whole caption: beam search (captioning/model/decoding.py) repeats the step, keeping the K most
    #    probable captions so far, and returns the best with the attention alpha_t of each of its words.
    # ---------------------------------------------------------------------------------------------------------------
    section(f"4. beam search (K = {args.beam}, at most {args.max_len} words)")
    decoded = beam_search(decoder, features, vocabulary.start, vocabulary.end, args.beam, args.max_len)
    tokens = [vocabulary.words[t] for t in decoded.tokens[0]]
    weights = decoded.weights[0]  # (T, 49)
    print(f"  caption: {' '.join(vocabulary.decode(decoded.tokens[0]))}")
    if truth is not None:
        print(f"  drawn:   {truth}")
    print(f"  attention: {weights.shape[0]} words x {weights.shape[1]} regions")
    for word, word_weights in zip(tokens, weights):
        cell = int(np.argmax(word_weights))
        print(f"    {word:<10} looks most at row {cell // side}, column {cell % side} ({word_weights[cell]:.3f})")

    # ---------------------------------------------------------------------------------------------------------------
    # 5. The figure: one panel per word, its 7 x 7 weights upsampled over the image (captioning/reports/figures.py).
    # ---------------------------------------------------------------------------------------------------------------
    section("5. attention figure")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    attention_figure(image, tokens, weights, args.out)
    print(f"  wrote {args.out}")
    return 0


def _imagenet_weights_cached(encoder: str, variant: str) -> bool:
    """Whether torchvision would find the ImageNet weights without downloading them."""
    import torchvision

    name = Path(torchvision.models.get_model_weights(encoder)[variant].url).name
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


if __name__ == "__main__":
    sys.exit(main())
