"""The dataset presets: every setting they pass names a real key with a valid value."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from captioning.params import SECTIONS, parse_section

REPO = Path(__file__).resolve().parents[1]


def preset_settings(script: str, tmp_path: Path) -> list[str]:
    """Run the preset with a fake `dvc` on PATH that records its arguments."""
    fake = tmp_path / "dvc"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    args_file = tmp_path / "args"
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", ARGS_FILE=str(args_file))
    subprocess.run(["bash", str(REPO / "presets" / script), "/data/root", "-S", "train.epochs=3"], env=env, check=True)
    return args_file.read_text().splitlines()


@pytest.mark.parametrize(
    ("script", "dataset"), [("flickr30k.sh", "flickr30k"), ("flickr8k.sh", "flickr8k"), ("coco.sh", "coco")]
)
def test_preset_sets_valid_params_and_lets_the_user_override(script: str, dataset: str, tmp_path: Path):
    args = preset_settings(script, tmp_path)
    assert args[:4] == ["exp", "run", "-n", dataset]
    settings = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for setting in settings:  # later settings win, as with dvc exp run
        key, value = setting.split("=", 1)
        section, name = key.split(".")
        assert name in params[section], f"{script}: {key} is not in params.yaml"
        params[section][name] = yaml.safe_load(value)
    for section in SECTIONS:
        parse_section(section, params[section])
    assert params["data"]["dataset"] == dataset and params["data"]["root"] == "/data/root"
    assert params["features"]["weights"] == "imagenet"
    assert params["train"]["epochs"] == 3, "the user's own -S comes last and wins"
