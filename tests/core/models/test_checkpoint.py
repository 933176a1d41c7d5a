"""load_prior / save_prior / read_checkpoint on real files: formats, safety, and the error messages."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffpir_core.models import (
    PRESETS,
    CheckpointError,
    Preset,
    PresetError,
    build_unet,
    default_model_dir,
    load_prior,
    save_prior,
)
from diffpir_core.models.checkpoint import check_compatible, inspect_checkpoint

GOOGLE_DRIVE_PAGE = b"""<!DOCTYPE html><html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"/>
<title>Google Drive - Virus scan warning</title></head><body><p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="https://drive.usercontent.google.com/download" method="get"></form></body></html>"""


def _forward(unet: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return unet(x, torch.tensor([3, 700]))


def test_flat_state_dict_loads_with_a_given_config(
    tiny_checkpoint: Path, tiny_config: dict, tiny_state_dict: dict[str, torch.Tensor]
) -> None:
    prior = load_prior(tiny_checkpoint, config=tiny_config)
    assert prior.name == "tiny" and prior.path == tiny_checkpoint
    assert prior.config == tiny_config
    assert prior.sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    for key, value in prior.unet.state_dict().items():
        assert torch.equal(value, tiny_state_dict[key]), key
    assert not prior.unet.training


def test_module_prefix_is_stripped(tmp_path: Path, tiny_config: dict, tiny_state_dict: dict) -> None:
    path = tmp_path / "dataparallel.pth"
    torch.save({f"module.{k}": v for k, v in tiny_state_dict.items()}, path)
    prior = load_prior(path, config=tiny_config)
    assert torch.equal(prior.unet.state_dict()["out.2.weight"], tiny_state_dict["out.2.weight"])


def test_sidecar_model_card_gives_the_config(tiny_checkpoint: Path, tiny_config: dict) -> None:
    tiny_checkpoint.with_suffix(".json").write_text(json.dumps({"config": tiny_config, "note": "card"}))
    assert load_prior(tiny_checkpoint).config == tiny_config


def test_bare_file_without_config_asks_for_one(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match=r"cannot tell which architecture .*num_channels=32.*config="):
        load_prior(tiny_checkpoint)


def test_safetensors_round_trip_keeps_weights_config_and_outputs(
    tmp_path: Path, tiny_checkpoint: Path, tiny_config: dict
) -> None:
    original = load_prior(tiny_checkpoint, config=tiny_config)
    path = save_prior(original.unet, tmp_path / "out" / "tiny.safetensors", original.config, metadata={"origin": "x"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == tiny_config and meta["origin"] == "x"
    reloaded = load_prior(path)
    assert reloaded.config == tiny_config and reloaded.name == "tiny"
    assert list(reloaded.unet.state_dict()) == list(original.unet.state_dict())
    assert torch.equal(_forward(reloaded.unet), _forward(original.unet))
    with pytest.raises(CheckpointError, match="ending in .safetensors"):
        save_prior(original.unet, tmp_path / "tiny.pt", tiny_config)


def test_embedded_config_of_a_wrapped_pt_file_is_used(small_vector_path: Callable[[str], Path]) -> None:
    """The test vectors are {"config", "state_dict", ...} dicts: the config inside is picked up."""
    prior = load_prior(small_vector_path("numheads"))
    assert prior.config["num_heads"] == 4 and prior.config["num_head_channels"] == -1


def test_html_page_saved_as_pt_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "diffusion_ffhq_10m.pt"
    path.write_bytes(GOOGLE_DRIVE_PAGE)
    with pytest.raises(CheckpointError, match=r"HTML web page \(page title: 'Google Drive - Virus scan warning'\)"):
        load_prior(path, config=PRESETS["ffhq_256"].config)


def test_pickled_code_is_never_run(tmp_path: Path, tiny_state_dict) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # what a malicious checkpoint does: call a function while unpickling
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_state_dict, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_prior(path)
    assert not marker.exists()


def test_common_non_tensor_objects_are_refused_with_advice(tmp_path: Path, tiny_state_dict) -> None:
    path = tmp_path / "with_args.pt"
    torch.save({"state_dict": tiny_state_dict, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match=r"re-save only its state_dict"):
        load_prior(path)


def test_truncated_file_is_reported_as_such(tmp_path: Path, tiny_checkpoint: Path, tiny_config: dict) -> None:
    path = tmp_path / "cut.pt"
    path.write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or corrupted download"):
        load_prior(path, config=tiny_config)


def test_wrong_config_lists_missing_unexpected_and_shape_conflicts(small_vector_path: Callable[[str], Path]) -> None:
    numheads = torch.load(small_vector_path("numheads"), weights_only=True)["config"]
    with pytest.raises(CheckpointError) as info:
        load_prior(small_vector_path("headch"), config=numheads)
    message = str(info.value)
    assert (
        "do not fit the given config for guided_unet_small_headch.pt (num_channels=32, out_channels=6, 228 tensors)"
        in message
    )
    assert "20 missing keys: output_blocks.1.2.in_layers.0.weight, output_blocks.1.2.in_layers.0.bias" in message
    assert "34 unexpected keys: input_blocks.2.1.norm.weight, input_blocks.2.1.norm.bias" in message
    assert "(+29 more)" in message
    assert "it matches no known preset" in message


def test_imagenet_weights_requested_as_ffhq_name_the_right_preset() -> None:
    with torch.device("meta"):
        imagenet = build_unet(**PRESETS["imagenet_256"].config).state_dict()
    with pytest.raises(CheckpointError) as info:
        check_compatible(imagenet, PRESETS["ffhq_256"].config, target="ffhq_256")
    message = str(info.value)
    assert "this file has num_channels=256: it looks like imagenet_256, not ffhq_256" in message
    assert "60 missing keys" in message and "264 unexpected keys" in message
    assert "shape conflicts: time_embed.0.weight file [1024, 256] vs model [512, 128]" in message


def test_preset_file_missing_says_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFPIR_MODEL_DIR", str(tmp_path))
    assert default_model_dir() == tmp_path
    with pytest.raises(CheckpointError, match=r"Run `diffpir models download ffhq_256`"):
        load_prior("ffhq_256")
    with pytest.raises(PresetError, match="unknown prior 'ffhq'"):
        load_prior("ffhq")


def test_wrong_file_under_a_preset_name_is_caught(tmp_path: Path, tiny_checkpoint: Path) -> None:
    (tmp_path / "256x256_diffusion_uncond.pt").write_bytes(tiny_checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match=r"do not fit imagenet_256 \(num_channels=32"):
        load_prior("256x256_diffusion_uncond", model_dir=tmp_path)  # DiffPIR's name is an alias


def test_default_model_dir_is_a_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DIFFPIR_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_model_dir() == tmp_path / "diffpir-flow" / "models"
    assert PRESETS["ffhq_256"].path() == tmp_path / "diffpir-flow" / "models" / "diffusion_ffhq_10m.pt"


def test_preset_sha256_is_enforced(
    tmp_path: Path, tiny_checkpoint: Path, tiny_config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = Preset(name="tiny_preset", description="test", filename="tiny.pt", config=tiny_config, sha256="0" * 64)
    monkeypatch.setitem(PRESETS, "tiny_preset", preset)
    with pytest.raises(CheckpointError, match=r"has sha256 [0-9a-f]{64}, but the official tiny_preset file has 0{64}"):
        load_prior("tiny_preset", model_dir=tiny_checkpoint.parent)
    info = inspect_checkpoint(tiny_checkpoint)
    assert info.matches == "tiny_preset"
    assert info.num_params == sum(p.numel() for p in build_unet(**tiny_config).parameters())


def test_demo_preset_loads_or_explains_why_not() -> None:
    demo = PRESETS["demo"]
    if demo.shipped.is_file() and demo.card.is_file():
        prior, card = load_prior("demo"), json.loads(demo.card.read_text())
        assert prior.config == card["config"]
        assert prior.sha256 == card.get("sha256", prior.sha256)
        assert inspect_checkpoint(demo.shipped).matches == "demo"
    else:
        with pytest.raises((CheckpointError, PresetError), match="demo"):
            load_prior("demo")
