"""captioning/device.py resolve_precision, and the loss scaling fp16 needs: what a CPU can check of the CUDA paths."""

from __future__ import annotations

import pytest
import torch

from captioning.device import resolve_precision

CUDA = torch.device("cuda")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_is_bf16_only_where_it_is_native(monkeypatch, native: bool, expected: str):
    """T4 and V100 have no bf16 units: torch emulates it there (is_bf16_supported() says True), slower than fp16."""
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", CUDA) == expected
    assert asked == [False]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_chosen_precision_is_kept(precision: str):
    assert resolve_precision(precision, CUDA) == precision
    assert resolve_precision(precision, torch.device("cpu")) == precision
