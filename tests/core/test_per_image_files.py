"""Per-image kernel/mask files (restore mode): folder matching by id, manifests, kernel padding, job-level errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffpir_core.io.degradation_files import pad_kernels, per_image_digest, per_image_files
from diffpir_core.runs.job import parse_job
from diffpir_core.task_kinds import task_kind


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
    assert per_image_digest(per_image_files(str(tmp_path), ["sub/a.jpg", "b.jpg", "c.jpg"], "kernel_uri", {".npy", ".png"}, {})) != before


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
    job = parse_job({"input": str(tmp_path), "output": str(tmp_path / "o"), "mode": "restore", "task": {"kind": "deblur", "kernel": str(manifest)}})
    with pytest.raises(ValueError, match="lacks column"):
        job.job_hash()
    with pytest.raises(ValueError, match="mode restore"):
        task_kind("inpaint")(mask=str(tmp_path / "m.csv")).check_mode("evaluate")
