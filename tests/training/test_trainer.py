"""Training is deterministic for a seed, resumes exactly, refuses foreign checkpoints, and exports a
prior that ``load_prior`` reads."""

import json
from pathlib import Path

import pytest
import torch

from diffpir_core.models import load_prior
from diffpir_core.training import TrainConfig, load_checkpoint, train
from diffpir_core.training.export import export_prior
from diffpir_core.training.trainer import ConfigMismatchError


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir)
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()}, **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def test_resume_equals_uninterrupted_and_seed_is_deterministic(tiny_config: TrainConfig, tmp_path: Path) -> None:
    full = train(tiny_config, tmp_path / "full", progress=False)
    assert full.step == 6 and not full.stopped_early

    first = train(tiny_config, tmp_path / "resumed", stop_at=3, progress=False)
    assert first.step == 3
    assert load_checkpoint(tmp_path / "resumed")["step"] == 3
    resumed = train(tiny_config, tmp_path / "resumed", progress=False)
    assert resumed.step == 6
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "resumed"))

    train(tiny_config, tmp_path / "again", progress=False)
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "again"))

    other_seed = tiny_config.model_copy(update={"seed": 4})
    train(other_seed, tmp_path / "other", progress=False)
    ema_full, ema_other = load_checkpoint(tmp_path / "full")["ema"], load_checkpoint(tmp_path / "other")["ema"]
    assert any(not torch.equal(ema_full[k], ema_other[k]) for k in ema_full)

    # the EMA moved away from the initial weights and lags behind the trained ones
    ckpt = load_checkpoint(tmp_path / "full")
    key = "out.2.weight"
    assert not torch.equal(ckpt["ema"][key], ckpt["model"][key])


def test_resume_with_another_config_is_refused(tiny_config: TrainConfig, tmp_path: Path) -> None:
    train(tiny_config, tmp_path, stop_at=2, progress=False)
    with pytest.raises(ConfigMismatchError, match="another config"):
        train(tiny_config.model_copy(update={"lr": 1e-3}), tmp_path, progress=False)


def test_export_writes_a_prior_that_load_prior_reads(tiny_config: TrainConfig, tmp_path: Path) -> None:
    train(tiny_config, tmp_path / "run", progress=False)
    card = export_prior(tmp_path / "run", tmp_path / "tiny.safetensors")
    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert on_disk == card
    assert card["steps"] == 6 and card["data"] == ["microaneurysms"]
    assert card["held_out"] == ["astronaut", "coffee", "chelsea"]
    assert card["final_loss"] == pytest.approx(
        sum(json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()) / 3
    )

    prior = load_prior(tmp_path / "tiny.safetensors")
    assert prior.sha256 == card["sha256"]
    ema = load_checkpoint(tmp_path / "run")["ema"]
    loaded = prior.unet.state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)
    out = prior.unet(torch.zeros(1, 3, 16, 16), torch.tensor([500]))
    assert out.shape == (1, 6, 16, 16)
