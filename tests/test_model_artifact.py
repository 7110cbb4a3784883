"""Publishing the trained model as a DVC artifact (docs/remote.md, "Publishing and using a trained model").

A tiny git+DVC repository whose stage writes models/model.pt (a tiny model file, as the caption tests make
them) declares the project's own `artifacts:` section, registers a version with GTO and pushes to a folder
remote; from another folder `dvc artifacts get` fetches the file through that remote (the publisher's cache is
gone by then), and the caption command captions an image with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny_model import write_tiny_model
from tiny_repo import REPO, commit_all, run

from captioning.commands.caption import main as caption
from captioning.text.vocabulary import SPECIALS

pytestmark = pytest.mark.slow
NAME = "captioning-model"
WORDS = [*SPECIALS, "a", "red", "blue", "square", "circle"]
IMAGE_SIZE = 64


def project_artifacts() -> dict:
    """The `artifacts:` section of the project's dvc.yaml, checked against the stage that writes the model."""
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    artifacts = dvc_yaml["artifacts"]
    assert artifacts[NAME]["path"] == "models/model.pt" and artifacts[NAME]["type"] == "model"
    assert "models/model.pt" in dvc_yaml["stages"]["finetune"]["outs"]
    assert "models/model.pt" in dvc_yaml["stages"]["evaluate"]["deps"]
    return artifacts


def test_a_pushed_model_is_fetched_by_name_and_captions_an_image(tmp_path: Path, capsys):
    publisher, store, consumer = tmp_path / "publisher", tmp_path / "store", tmp_path / "consumer"
    publisher.mkdir()
    consumer.mkdir()
    (publisher / "README.md").write_text("A trained captioning model.\n")
    commit_all(publisher, "a model to publish")
    run(["dvc", "init", "-q"], publisher)
    write_tiny_model(publisher / "tiny.pt", WORDS, IMAGE_SIZE, epoch=1)
    stages = {"finetune": {"cmd": "cp tiny.pt models/model.pt", "deps": ["tiny.pt"], "outs": ["models/model.pt"]}}
    (publisher / "models").mkdir()
    (publisher / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    run(["dvc", "remote", "add", "-d", "store", str(store)], publisher)
    run(["dvc", "repro"], publisher)
    commit_all(publisher, "the model")

    # Declaring the artifact changes no stage: nothing to rerun.
    (publisher / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages, "artifacts": project_artifacts()}))
    assert "Data and pipelines are up to date." in run(["dvc", "status"], publisher).stdout
    commit_all(publisher, "the model as an artifact")
    assert "1 file pushed" in run(["dvc", "push"], publisher).stdout

    # Without a registered version there is nothing to get; GTO's annotated tag NAME@v1.0.0 registers one.
    untagged = run(["dvc", "artifacts", "get", str(publisher), NAME], consumer, check=False)
    assert untagged.returncode == 1 and f"Unable to find artifact '{NAME}'" in untagged.stderr
    run(["gto", "register", NAME, "HEAD", "--version", "v1.0.0"], publisher)
    assert run(["git", "tag"], publisher).stdout.split() == [f"{NAME}@v1.0.0"]

    shutil.rmtree(publisher / ".dvc/cache")  # what is fetched must come from the remote
    run(["dvc", "artifacts", "get", str(publisher), NAME], consumer)
    run(["dvc", "artifacts", "get", str(publisher), NAME, "--rev", "v1.0.0", "-o", "pinned.pt"], consumer)
    fetched = consumer / "model.pt"
    assert fetched.read_bytes() == (publisher / "tiny.pt").read_bytes() == (consumer / "pinned.pt").read_bytes()

    photo = consumer / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(photo)
    capsys.readouterr()
    assert caption([str(photo), "--model", str(fetched), "--max-len", "3", "--beam", "2"]) == 0
    path, words = capsys.readouterr().out.strip().split("\t")
    assert path == str(photo) and len(words.split()) == 3 and set(words.split()) <= set(WORDS[len(SPECIALS) :])
