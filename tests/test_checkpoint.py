"""Training checkpoints as safetensors + JSON: exact round trip, refusals, old-file conversion."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from nucseg.training import checkpoint


@dataclasses.dataclass(frozen=True)
class _Config:
    lr: float = 0.1
    channels: tuple[int, ...] = (4, 2)


def _trained(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        optimiser.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        optimiser.step()
    return model, optimiser


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_round_trip_restores_everything_exactly(tmp_path):
    model, optimiser = _trained()
    ema = {"n_averaged": torch.tensor(3), "module.0.weight": torch.ones(4, 3)}
    rng = np.random.default_rng(7)
    state = {"step": 2, "elapsed": 1.25, "history": [{"step": 1, "loss": 0.5}]}
    checkpoint.write_checkpoint(tmp_path, _Config(), model, optimiser, step=2, state=state,
                                ema=ema, numpy_rng=rng.bit_generator.state)  # fmt: skip
    expected_next = torch.rand(3)  # the torch RNG continues from the saved state
    fresh, fresh_optimiser = _trained(seed=1)
    saved = checkpoint.load_checkpoint(tmp_path, _Config(), fresh, fresh_optimiser, "cpu")
    assert torch.equal(torch.rand(3), expected_next)
    _same_state(model.state_dict(), fresh.state_dict())
    for a, b in zip(optimiser.state.values(), fresh_optimiser.state.values(), strict=True):
        _same_state(a, b)
    assert saved["state"] == state and saved["step"] == 2
    _same_state(saved["ema"], ema)
    restored = np.random.default_rng(0)
    restored.bit_generator.state = saved["numpy_rng"]
    assert restored.random() == rng.random()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-000000002.safetensors", "checkpoint.json"]
    checkpoint.write_checkpoint(tmp_path, _Config(), model, optimiser, step=3, state=state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-000000003.safetensors",
        "checkpoint.json",
    ]  # the older tensor file is gone once the record names the new one


def test_refusals_name_the_problem(tmp_path):
    model, optimiser = _trained()
    with pytest.raises(FileNotFoundError, match="checkpoint.json does not exist"):
        checkpoint.load_checkpoint(tmp_path, _Config(), model, optimiser, "cpu")
    checkpoint.write_checkpoint(tmp_path, _Config(), model, optimiser, step=2)
    with pytest.raises(ValueError, match="another config .*lr"):
        checkpoint.load_checkpoint(tmp_path, _Config(lr=0.2), model, optimiser, "cpu")
    tensors = tmp_path / "checkpoint-000000002.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern changed: the record's SHA-256 no longer matches
    tensors.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not the tensors"):
        checkpoint.load_checkpoint(tmp_path, _Config(), model, optimiser, "cpu")


def test_an_old_pickle_checkpoint_is_refused_or_converted_on_request(tmp_path):
    model, optimiser = _trained()
    old = {"config": dataclasses.asdict(_Config()), "model": model.state_dict(),
           "optimiser": optimiser.state_dict(), "torch_rng": torch.get_rng_state(),
           "state": {"step": 2, "elapsed": 3.0, "history": []}}  # fmt: skip
    torch.save(old, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="pickle checkpoint .* not read"):
        checkpoint.read_record(tmp_path)
    checkpoint.convert_legacy(tmp_path)
    fresh, fresh_optimiser = _trained(seed=1)
    saved = checkpoint.load_checkpoint(tmp_path, _Config(), fresh, fresh_optimiser, "cpu")
    _same_state(model.state_dict(), fresh.state_dict())
    assert saved["state"]["elapsed"] == 3.0
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    assert record["config"]["channels"] == [4, 2]
