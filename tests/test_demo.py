"""The browser demo: the ranked beams, what the page shows for an image or a bad file, and the page itself
in a headless Chromium (a tiny decoder over a seeded random ResNet50, 64-pixel images, 2 x 2 regions)."""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny_model import write_tiny_model

from captioning.__main__ import main
from captioning.commands.caption import Captioner
from captioning.data.images import BadImageError, load_rgb
from captioning.data.table import CaptionTable, ImageRecord, write_table
from captioning.demo.app import cached_png
from captioning.demo.beams import ranked_beams
from captioning.demo.explain import Explainer, attention_overlay, provenance, read_image, split_images
from captioning.model import CaptionDecoder, DecoderConfig
from captioning.model.decoding import beam_search
from captioning.text.vocabulary import SPECIALS

WORDS = [*SPECIALS, "a", "red", "blue", "green", "square", "circle", "triangle", "left", "of"]
IMAGE_SIZE = 64
BEAM, MAX_LEN = 5, 6
REPO = Path(__file__).resolve().parents[1]
VALIDATION = {"bleu_4": 0.5, "cider": 1.25, "loss": 2.0}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return write_tiny_model(path, WORDS, IMAGE_SIZE, epoch=3, validation=VALIDATION)


@pytest.fixture(scope="module")
def captioner(model) -> Captioner:
    return Captioner.load(model, torch.device("cpu"))


@pytest.fixture(scope="module")
def explainer(captioner) -> Explainer:
    return Explainer(captioner, BEAM, MAX_LEN)


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Shapes on a plain background, so that an attention veil over it is plain to see."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(120, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        draw.ellipse((x, y, x + 40, y + 40), fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
    return image


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A photo, the files that need converting (CMYK, 16-bit, EXIF-rotated) and files that cannot be used."""
    folder = tmp_path_factory.mktemp("images")
    paths = {kind: folder / name for kind, name in [
        ("photo", "photo.png"), ("cmyk", "cmyk.jpg"), ("deep", "deep.png"), ("rotated", "rotated.jpg"),
        ("empty", "empty.png"), ("text", "my_notes_[1].txt"), ("huge", "huge.png"),
    ]}  # fmt: skip
    scene(300, 200, 0).save(paths["photo"])
    scene(120, 90, 1).convert("CMYK").save(paths["cmyk"], quality=95)
    gradient = np.linspace(0, 65535, 100 * 80).reshape(80, 100).astype(np.uint16)
    Image.fromarray(gradient).save(paths["deep"])  # 16-bit grayscale ("I;16")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    scene(100, 60, 2).save(paths["rotated"], exif=exif, quality=95)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("these are my notes, not an image\n")
    Image.new("1", (8000, 6251)).save(paths["huge"])  # 50,008,000 pixels, a few kilobytes on disk
    return paths


@torch.inference_mode()
def replayed_log_probability(decoder: CaptionDecoder, features: torch.Tensor, start: int, words: list[int]) -> float:
    """The words fed back one by one after <start> (teacher forcing), their log-probabilities summed."""
    encoded = decoder.encode(features)
    state = decoder.initial_state(encoded)
    total, previous = 0.0, torch.tensor([start])
    for word in words:
        logits, state, _ = decoder.step(previous, state, encoded)
        total += float(torch.log_softmax(logits.float(), dim=1)[0, word])
        previous = torch.tensor([word])
    return total


@pytest.mark.parametrize("attention,deep_output", [("soft", False), ("soft", True), ("none", False)])
@pytest.mark.parametrize("beam_size,max_len", [(1, 4), (3, 1), (5, 8)])
def test_ranked_beams_are_beam_search_best_first(attention, deep_output, beam_size, max_len, torch_single_thread):
    torch.manual_seed(1)
    config = DecoderConfig(
        vocab_size=9, embed_dim=8, feature_dim=12, decoder_dim=16, attention_dim=16, dropout=0.0,
        attention=attention, deep_output=deep_output,
    )  # fmt: skip
    decoder = CaptionDecoder(config).eval()
    start, end = 1, 2
    with torch.no_grad():
        decoder.output.bias[end] = 1.0  # some beams end early: lengths differ
    for seed in range(4):
        features = torch.randn(1, 9, 12, generator=torch.Generator().manual_seed(seed))
        best = beam_search(decoder, features, start, end, beam_size, max_len)
        beams = ranked_beams(decoder, features, start, end, beam_size, max_len)
        assert len(beams) == beam_size
        assert beams[0].tokens == best.tokens[0]
        np.testing.assert_array_equal(beams[0].weights, best.weights[0])
        scores = [beam.score for beam in beams]
        assert scores == sorted(scores, reverse=True)
        for beam in beams:
            if not np.isfinite(beam.score):
                continue
            assert beam.weights.shape == (len(beam.tokens), 1 if attention == "none" else 9)
            assert end not in beam.tokens and len(beam.tokens) <= max_len
            ended = len(beam.tokens) < max_len  # else cut by max_len: no <end> in its score
            words = [*beam.tokens, end] if ended else beam.tokens
            assert beam.log_probability == pytest.approx(
                replayed_log_probability(decoder, features, start, words), abs=1e-4
            )
            assert beam.score == pytest.approx(beam.log_probability / max(len(words), 1), abs=1e-5)


def test_explanation_is_the_caption_commands_caption(explainer, captioner, images, torch_single_thread):
    image = load_rgb(images["photo"])
    (expected,) = captioner.caption([captioner.prepare(image)], BEAM, MAX_LEN)
    explanation = explainer.explain_file(images["photo"])
    assert explanation.words == expected.words and explanation.tokens == expected.tokens
    np.testing.assert_array_equal(explanation.weights, expected.weights)
    assert explanation.beams[0].words == expected.words and len(explanation.beams) == 3
    assert explanation.display.size == (448, 299) and explanation.notes == []  # 300 x 200, made to fit 448


def test_each_word_has_its_own_attention_map(explainer, images, torch_single_thread):
    explanation = explainer.explain_file(images["photo"])
    assert len(explanation.tokens) >= 2
    maps = [np.asarray(attention_overlay(explanation.display, w), dtype=np.float32) for w in explanation.weights]
    display = np.asarray(explanation.display, dtype=np.float32)
    for weights, overlay in zip(explanation.weights, maps):
        assert overlay.shape == display.shape and overlay.std() > 10  # not blank
        assert np.all(overlay <= display + 0.5)  # a veil only darkens
        clearest = np.unravel_index(np.argmax(weights), (2, 2))  # the most-attended region is left clear
        height, width = display.shape[:2]
        row, column = (int((clearest[0] + 0.5) * height / 2), int((clearest[1] + 0.5) * width / 2))
        assert np.abs(overlay[row, column] - display[row, column]).max() < 0.25 * 255
    different = [i for i in range(1, len(maps)) if not np.array_equal(maps[i], maps[0])]
    assert different, "every word's map is the first one's"


@pytest.mark.parametrize(
    "kind,message",
    [
        ("empty", "empty.png: the file is empty (0 bytes)"),
        ("text", "my_notes_[1].txt: cannot decode image ("),
        ("huge", "huge.png: 8000x6251 pixels is over the 50,000,000-pixel limit"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(images, kind, message):
    with pytest.raises(BadImageError) as error:
        read_image(images[kind])
    assert str(error.value).startswith(message) and len(str(error.value).splitlines()) == 1
    with pytest.raises(BadImageError) as error:  # an upload's temporary path is replaced by the name the user gave
        read_image(images[kind], "my file")
    assert str(error.value).startswith("my file: ") and str(images[kind]) not in str(error.value)


def test_no_file_is_a_message_too():
    with pytest.raises(BadImageError, match="drop an image"):
        read_image(None)


@pytest.mark.parametrize(
    "kind,note",
    [("cmyk", "CMYK converted to RGB"), ("deep", "16-bit values scaled to 8 bits"),
     ("rotated", "turned upright as its EXIF orientation (6) says")],
)  # fmt: skip
def test_converted_files_are_captioned_as_the_features_stage_sees_them(
    explainer, captioner, images, kind, note, torch_single_thread
):
    explanation = explainer.explain_file(images[kind])
    assert explanation.notes == [note]
    image = load_rgb(images[kind])  # the features stage's conversion
    (expected,) = captioner.caption([captioner.prepare(image)], BEAM, MAX_LEN)
    assert explanation.tokens == expected.tokens
    np.testing.assert_array_equal(explanation.weights, expected.weights)
    assert explanation.display.mode == "RGB"
    if kind == "rotated":  # stored 100 x 60, shown upright: 60 wide, 100 high
        assert image.size == (60, 100) and explanation.display.size[0] < explanation.display.size[1]


def test_an_image_shown_again_is_the_same_file_never_rewritten(tmp_path):
    """Two users shown the same map get one file, complete from the moment its name exists: a second request must
    not rewrite it while the first is being fetched (Gradio's own image cache rewrites it in place)."""
    image, other = scene(96, 64, 0), scene(96, 64, 1)
    first = Path(cached_png(image, tmp_path))
    with Image.open(first) as written:
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), np.asarray(image))
    os.utime(first, ns=(10**9, 10**9))  # an old file: any rewrite would show in its times
    before = first.stat()
    again = Path(cached_png(image.copy(), tmp_path))
    assert again == first and (again.stat().st_ino, again.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    third = Path(cached_png(other, tmp_path))
    assert third.parent != first.parent and third.name == first.name
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [first.relative_to(tmp_path), third.relative_to(tmp_path)]
    )  # no staging file left behind


def test_provenance_comes_from_the_model_file(model, tmp_path):
    payload = torch.load(model, weights_only=True)
    rows = dict(provenance(model, payload))
    assert rows["model file"] == str(model) and rows["epoch"] == "3"
    assert rows["validation"] == "bleu_4 0.5000, cider 1.2500, loss 2.0000"
    assert rows["encoder"].startswith("ResNet50 with seeded random weights (features.weights none, seed 0); 64 x 64")
    assert payload["feature_recipe"]["encoder_fingerprint"] in rows["encoder"]
    assert rows["decoder"] == f"soft attention, LSTM 16, attention 16, embeddings 8, {len(WORDS)}-word vocabulary"
    assert rows["dataset"] == "not recorded in the model file"
    table = tmp_path / "dataset.json"
    write_table(table, CaptionTable("scenes", tmp_path, [ImageRecord("a.png", "test", ["a red circle"])]))
    assert dict(provenance(model, payload, table))["dataset"] == f"not recorded in the model file ({table} says scenes)"
    assert dict(provenance(model, {**payload, "dataset": "flickr8k"}, table))["dataset"] == "flickr8k"
    deeper = {**payload, "feature_recipe": {**payload["feature_recipe"], "encoder": "resnet101", "image_size": 448}}
    assert dict(provenance(model, deeper))["encoder"].startswith("ResNet101 with seeded random weights")
    assert "; 448 x 448 pixels, 14 x 14 regions;" in dict(provenance(model, deeper))["encoder"]


def test_test_images_come_from_the_caption_table(tmp_path):
    records = [ImageRecord(name, split, ["a red circle"]) for name, split in
               [("a.png", "train"), ("b.png", "test"), ("c.png", "val"), ("d.png", "test")]]  # fmt: skip
    write_table(tmp_path / "dataset.json", CaptionTable("scenes", tmp_path / "images", records))
    assert split_images(tmp_path / "dataset.json") == {
        "b.png": tmp_path / "images/b.png",
        "d.png": tmp_path / "images/d.png",
    }
    assert split_images(tmp_path / "missing.json") == {} and split_images(None) == {}
    (tmp_path / "broken.json").write_text("[1, 2]")
    assert split_images(tmp_path / "broken.json") == {}


def test_without_gradio_the_demo_says_how_to_install_it(model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    assert main(["demo", "--model", str(model)]) == 1
    assert capsys.readouterr().err.strip() == "error: the demo needs Gradio: pip install -e '.[demo]'"


def test_a_missing_model_is_one_line(tmp_path, capsys):
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("needs Gradio installed (the message above comes first otherwise)")
    assert main(["demo", "--model", str(tmp_path / "none.pt")]) == 1
    assert (
        capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.pt'}: model file not found (run the train stage)"
    )


def test_a_port_in_use_is_one_line_naming_the_option_before_the_model_loads(model, monkeypatch, capsys):
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("needs Gradio installed (the message above comes first otherwise)")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(Captioner, "load", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--model", str(model), "--port", str(port)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: cannot serve on 127.0.0.1:{port}: the port is in use (another demo?); choose another with --port"
    ]
    assert main(["demo", "--model", str(model), "--host", "192.0.2.1"]) == 1  # TEST-NET-1: not this machine's
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: cannot serve on 192.0.2.1:7860: 192.0.2.1 is not an address of this machine; check --host"
    ]


def served_image(page, src: str) -> np.ndarray:
    response = page.request.get(src)
    assert response.ok, src
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"), dtype=np.float32)


@pytest.mark.slow
def test_the_page_in_a_headless_browser(model, images, captioner, explainer, tmp_path):
    """Serve the demo, caption a photo in Chromium, choose a word, upload bad files; the server keeps serving."""
    from demo_browser import (
        DemoServer,
        attention_src,
        caption_text,
        choose_word,
        chromium_path,
        open_page,
        pick_test_image,
        upload,
        wait_for_attention_image,
    )

    if chromium_path() is None and not os.environ.get("CI"):
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    pytest.importorskip("gradio")

    photo = load_rgb(images["photo"])
    (expected,) = captioner.caption([captioner.prepare(photo)], BEAM, MAX_LEN)
    display = explainer.explain(photo).display
    changes = [float(np.abs(w - expected.weights[0]).sum()) for w in expected.weights]
    other = int(np.argmax(changes))
    assert changes[other] > 0.05, "the tiny model attends alike for every word: choose another seed"
    table = tmp_path / "dataset.json"
    write_table(table, CaptionTable("scenes", images["photo"].parent, [ImageRecord("photo.png", "test", ["a circle"])]))
    env = {"PYTHONPATH": str(REPO), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "OMP_NUM_THREADS": "1"}
    server = DemoServer(model, extra=["--max-len", str(MAX_LEN), "--table", str(table)], env=env)
    with server, sync_playwright() as playwright:
        browser, page, requests = open_page(playwright, server.url)
        try:
            assert "epoch: 3" in page.locator("#provenance").inner_text()
            message = upload(page, images["photo"])
            assert message.startswith("Captioned photo.png in ")
            assert caption_text(page) == " ".join(expected.words)
            beams = page.locator("#beams").inner_text()
            assert " ".join(expected.words) in beams and beams.count("\n") >= 3  # a header and three beams
            first = served_image(page, wait_for_attention_image(page))
            np.testing.assert_allclose(first, attention_overlay(display, expected.weights[0]), atol=3)
            rendered = np.asarray(Image.open(io.BytesIO(page.locator("#attention img").screenshot())).convert("L"))
            assert rendered.std() > 10  # what the browser drew is not blank

            assert page.locator("#words label").count() == len(expected.tokens)
            chosen = served_image(page, choose_word(page, other))
            np.testing.assert_allclose(chosen, attention_overlay(display, expected.weights[other]), atol=3)
            assert np.abs(chosen - first).mean() > 1  # the map changed

            for kind in ("text", "empty", "huge"):
                message = upload(page, images[kind])
                assert message.startswith(f"Cannot caption this file. {images[kind].name}: "), message
                assert caption_text(page) == "" and attention_src(page) is None
            message = upload(page, images["cmyk"])  # still serving, and converting as the features stage does
            assert "CMYK converted to RGB" in message
            (cmyk,) = captioner.caption([captioner.prepare(load_rgb(images["cmyk"]))], BEAM, MAX_LEN)
            assert caption_text(page) == " ".join(cmyk.words)
            assert pick_test_image(page, "photo.png").startswith("Captioned photo.png in ")  # from the caption table
            assert caption_text(page) == " ".join(expected.words)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert server.process.poll() is not None  # stopped: no server left behind
    with Image.open(tmp_path / "demo.png") as screenshot:
        assert screenshot.width == 1280 and np.asarray(screenshot.convert("L")).std() > 10
    assert requests.seen and requests.refused == []  # offline: nothing but the demo server was asked for anything
    assert all(url.startswith(server.url) for url in requests.seen if not url.startswith(("data:", "blob:")))
