"""Per-image kernel/mask files (restore mode): folder matching by id, manifests, kernel padding, job-level errors."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffpir_core.io.degradation_files import (
    kernel_from_bytes,
    load_kernel,
    pad_kernels,
    per_image_digest,
    per_image_files,
)
from diffpir_core.runs.job import parse_job
from diffpir_core.task_kinds import task_kind
from diffpir_core.task_kinds.baselines import biharmonic_inpaint


def test_folder_files_match_ids_by_stem_in_subfolders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "a.npy", np.ones((3, 3)))
    np.save(tmp_path / "b.npy", np.ones((3, 3)))
    Image.fromarray(np.full((3, 3), 255, np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "c.txt").write_text("not a kernel extension")
    files = per_image_files(str(tmp_path), ["sub/a.jpg", "b.jpg", "c.jpg"], "kernel_uri", {".npy", ".png"}, {})
    assert files["sub/a.jpg"].uri.endswith("sub/a.npy") and files["sub/a.jpg"].reason is None
    assert "several files" in files["b.jpg"].reason and files["b.jpg"].data is None
    assert "no file c.<npy|png>" in files["c.jpg"].reason
    before = per_image_digest(files)
    np.save(tmp_path / "sub" / "a.npy", np.ones((5, 5)))
    assert (
        per_image_digest(
            per_image_files(str(tmp_path), ["sub/a.jpg", "b.jpg", "c.jpg"], "kernel_uri", {".npy", ".png"}, {})
        )
        != before
    )


def test_manifest_rows_sigma_and_bad_cells(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "m.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,mask_uri,noise_sigma\na.png,m.png,0.1\nb.png,m.png,loud\nc.png,,\n")
    files = per_image_files(str(manifest), ["a.png", "b.png", "c.png", "d.png"], "mask_uri", {".png"}, {})
    assert files["a.png"].noise_sigma == 0.1 and files["a.png"].data is not None
    assert "noise_sigma 'loud'" in files["b.png"].reason
    assert "empty mask_uri" in files["c.png"].reason
    assert "no row" in files["d.png"].reason


def test_kernel_padding_keeps_the_centre() -> None:
    odd, even = np.arange(9, dtype=np.float32).reshape(3, 3), np.ones((4, 4), np.float32)
    padded = pad_kernels([odd, even, np.ones((7, 7), np.float32)])
    assert padded.shape == (3, 7, 7)
    assert padded[0][3, 3] == odd[1, 1] and padded[0].sum() == odd.sum()
    assert padded[1][3, 3] == even[2, 2] and padded[1].sum() == even.sum()


def test_bad_manifest_fails_the_job_hash_and_evaluate_refuses_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "k.csv"
    manifest.write_text("name,kernel\na.png,k.npy\n")
    job = parse_job(
        {
            "input": str(tmp_path),
            "output": str(tmp_path / "o"),
            "mode": "restore",
            "task": {"kind": "deblur", "kernel": str(manifest)},
        }
    )
    with pytest.raises(ValueError, match="lacks column"):
        job.job_hash()
    with pytest.raises(ValueError, match="mode restore"):
        task_kind("inpaint")(mask=str(tmp_path / "m.csv")).check_mode("evaluate")


def test_each_bad_kernel_file_is_named_with_its_own_reason(tmp_path: Path) -> None:
    """A NaN, an all-zero, a negative-sum or a non-square kernel, a text file named .npy and an object array each get
    the reason that fits (they were all "need a square 2-D kernel with a positive sum, got shape (5, 5)", and the text
    file numpy's allow_pickle advice)."""
    with_nan = np.ones((5, 5))
    with_nan[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    np.save(tmp_path / "zero.npy", np.zeros((5, 5)))
    np.save(tmp_path / "negative.npy", -np.ones((3, 3)))
    np.save(tmp_path / "wide.npy", np.ones((3, 5)))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("0.1 0.2 0.1\n0.2 0.4 0.2\n0.1 0.2 0.1\n")
    expected = {
        "nan": "holds 1 NaN or infinite value(s)",
        "zero": "is all zero",
        "negative": "sums to -9",
        "wide": "has shape (3, 5); a blur kernel is a square 2-D array",
        "objects": "holds Python objects, not numbers",
        "text": "is not a NumPy .npy file",
    }
    for name, reason in expected.items():
        uri = str(tmp_path / f"{name}.npy")
        with pytest.raises(ValueError, match=re.escape(reason)) as caught:
            kernel_from_bytes(uri, (tmp_path / f"{name}.npy").read_bytes())
        assert uri in str(caught.value) and "allow_pickle" not in str(caught.value), caught.value
        with pytest.raises(ValueError, match=re.escape(reason)):
            load_kernel(uri, {})  # the task's one kernel file says the same


def test_an_oversized_or_degenerate_kernel_quarantines_its_image_alone(tmp_path: Path) -> None:
    """A 129x129 kernel for a 64x64 image is quarantined with the file and both sizes; the other image keeps its
    5x5 kernel (the padded stack is not blown up to 129x129, which failed the whole shard in the operator)."""
    np.save(tmp_path / "big.npy", np.ones((129, 129)))
    np.save(tmp_path / "small.npy", np.ones((5, 5)))
    np.save(tmp_path / "zero.npy", np.zeros((5, 5)))
    given = task_kind("deblur")(kernel=str(tmp_path)).given(["big.png", "small.png", "zero.png"], (3, 64, 64), {})
    assert sorted(given.quarantined) == ["big.png", "zero.png"]
    assert given.quarantined["big.png"] == (
        f"kernel {tmp_path}/big.npy is 129x129, larger than its 64x64 image; give a kernel of at most 64x64 pixels "
        "(crop its zero border)"
    )
    assert "is all zero" in given.quarantined["zero.png"]
    assert tuple(given.params["kernel"].shape) == (3, 5, 5)
    np.testing.assert_allclose(given.params["kernel"][1].numpy(), np.full((5, 5), 1 / 25), rtol=1e-6)


def test_an_all_black_mask_quarantines_its_image_and_the_baseline_stays_defined(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "white.png")
    given = task_kind("inpaint")(mask=str(tmp_path)).given(["black.png", "white.png"], (2, 8, 8), {})
    assert list(given.quarantined) == ["black.png"]
    assert given.quarantined["black.png"].startswith(f"mask {tmp_path}/black.png has no known pixel (all black")
    with pytest.raises(ValueError, match="has no known pixel"):
        task_kind("inpaint")(mask=str(tmp_path / "black.png")).given_params((1, 8, 8), {})
    y = torch.rand(2, 3, 8, 8)
    masks = torch.stack([torch.zeros(8, 8), (torch.arange(64).reshape(8, 8) % 3 == 0).float()])
    filled = biharmonic_inpaint(y * masks[:, None], masks)  # numpy's "zero-size array to reduction" before
    assert torch.equal(filled[0], torch.zeros(3, 8, 8)) and filled[1].std() > 0
