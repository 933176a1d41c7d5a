"""LPIPS and FID without their backbones report why; with stand-ins our wiring is checked."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffpir_core.metrics import (
    InceptionFeatures,
    LPIPSScorer,
    MetricUnavailable,
    hub_checkpoint_dir,
    load_inception,
    load_lpips,
    score_batch,
)
from diffpir_core.metrics.fid import INCEPTION_FILE, INCEPTION_URL
from diffpir_core.metrics.perceptual import VGG16_FILE, VGG16_URL


def _torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def _metrics_extra_importable() -> bool:
    try:
        import lpips  # noqa: F401
        import pytorch_fid.inception  # noqa: F401
    except Exception:
        return False
    return _torchvision_importable()


@pytest.mark.skipif(_torchvision_importable(), reason="torchvision imports here")
@pytest.mark.parametrize(("loader", "metric"), [(load_lpips, "LPIPS"), (load_inception, "FID")])
def test_without_torchvision_metrics_are_unavailable(loader, metric: str, torch_home: Path) -> None:
    result = loader("cpu")
    assert isinstance(result, MetricUnavailable)
    assert result.metric == metric and "torchvision" in result.reason
    assert "pip install 'diffpir-flow[metrics]'" in result.fix
    assert "\n" not in result.message and result.message.startswith(f"{metric} unavailable: ")


def test_a_torchvision_built_for_another_torch_is_unavailable(
    tmp_path: Path, torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = load_lpips()
    assert isinstance(result, MetricUnavailable)
    assert "torchvision::nms does not exist" in result.reason


@pytest.mark.usefixtures("stand_in_backbones")
@pytest.mark.parametrize(
    ("loader", "file_name", "url"),
    [(load_lpips, VGG16_FILE, VGG16_URL), (load_inception, INCEPTION_FILE, INCEPTION_URL)],
)
def test_missing_weights_name_the_file_url_and_cache_path(loader, file_name, url, torch_home) -> None:
    result = loader()
    assert isinstance(result, MetricUnavailable)
    expected_path = torch_home / "hub" / "checkpoints" / file_name
    assert hub_checkpoint_dir() == expected_path.parent
    assert file_name in result.reason
    assert url in result.fix and str(expected_path) in result.fix


@pytest.mark.usefixtures("stand_in_backbones")
def test_lpips_scores_clamped_outputs_in_minus_one_one(torch_home: Path) -> None:
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    (torch_home / "hub" / "checkpoints" / VGG16_FILE).write_bytes(b"seeded")
    scorer = load_lpips()
    assert isinstance(scorer, LPIPSScorer) and load_lpips() is scorer
    out = torch.full((2, 3, 8, 8), 1.5)
    out[1] = 0.25
    ref = torch.zeros(2, 3, 8, 8)
    np.testing.assert_allclose(scorer(out, ref), [4.0, 0.25])  # (2·1 − 1 − (−1))², (0.5)²
    assert scorer.network.seen == [(-1.0, 1.0)]
    scores = score_batch(out, np.zeros((2, 8, 8, 3), np.uint8), ["lpips"])
    assert scores.unavailable == {} and scores.rows() == [{"lpips": 4.0}, {"lpips": 0.25}]


@pytest.mark.usefixtures("stand_in_backbones")
def test_inception_features_are_pool3_vectors(torch_home: Path) -> None:
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    (torch_home / "hub" / "checkpoints" / INCEPTION_FILE).write_bytes(b"seeded")
    extractor = load_inception()
    assert isinstance(extractor, InceptionFeatures)
    features = extractor(torch.rand(3, 3, 16, 16))
    assert features.shape == (3, 2048) and features.dtype == np.float64


@pytest.mark.skipif(
    not _metrics_extra_importable(), reason="the metrics extra (lpips, pytorch-fid, torchvision) is not installed"
)
def test_real_packages_with_a_seeded_cache(torch_home: Path) -> None:
    """With the extra installed: randomly initialised backbones of the right shapes stand in for the
    downloaded weights, and our scores equal the libraries' own."""
    import lpips
    import pytorch_fid.inception as fid_inception
    import torchvision

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), checkpoints / VGG16_FILE)
    inception = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    torch.save(inception.state_dict(), checkpoints / INCEPTION_FILE)
    generator = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)

    scorer = load_lpips()
    assert isinstance(scorer, LPIPSScorer)
    with torch.no_grad():
        expected = lpips.LPIPS(net="vgg", verbose=False).eval()(a * 2 - 1, b * 2 - 1)
    np.testing.assert_allclose(scorer(a, b), expected.flatten().double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(scorer(a, a), [0.0, 0.0], atol=1e-7)

    extractor = load_inception()
    assert isinstance(extractor, InceptionFeatures)
    with torch.no_grad():
        pooled = fid_inception.InceptionV3([3]).eval()(a)[0]
    np.testing.assert_allclose(extractor(a), pooled.reshape(2, -1).double().numpy(), rtol=1e-6)
