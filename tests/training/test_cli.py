"""``diffpir train-prior`` / ``export-prior`` from the command line: train, resume, export, bad input."""

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from diffpir_core.training import TrainConfig
from diffpir_flow.cli.app import app


def test_train_resume_and_export_from_the_cli(tiny_config: TrainConfig, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    runner = CliRunner()
    base = ["train-prior", "--config", str(config_file), "--run-dir", str(tmp_path / "run"), "--device", "cpu", "-q"]

    first = runner.invoke(app, [*base, "--steps", "2"])
    assert first.exit_code == 0, first.output
    assert "finished at step 2/2" in first.output

    refused = runner.invoke(app, [*base, "--steps", "4", "--lr", "0.01"])
    assert refused.exit_code == 1 and "another config" in refused.output

    weights = tmp_path / "out" / "tiny.safetensors"
    extended = runner.invoke(app, [*base, "--steps", "3", "--export", str(weights)])
    assert extended.exit_code == 0, extended.output
    assert "finished at step 3/3" in extended.output
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["steps"] == 3 and card["config"]["image_size"] == 16

    exported = runner.invoke(app, ["export-prior", str(tmp_path / "run"), str(tmp_path / "again.safetensors")])
    assert exported.exit_code == 0 and "step 3" in exported.output

    bad = runner.invoke(app, ["train-prior", "--run-dir", str(tmp_path / "bad"), "--crop", "4", "-q"])
    assert bad.exit_code == 1 and "crop" in bad.output

    missing = runner.invoke(app, ["export-prior", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")])
    assert missing.exit_code == 1 and "no checkpoint" in missing.output
