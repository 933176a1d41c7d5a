"""Output locations a job owns: the marker, refusal of someone else's files and of outputs inside the input."""

import json

import pytest
import s3fs

from diffpir_core.io.outputs import MARKER, OutputRefused, claim_output, is_inside, is_ours


def test_a_new_or_empty_output_is_claimed_and_stays_ours(tmp_path):
    claim_output(str(tmp_path / "new"), str(tmp_path / "images"))
    marker = json.loads((tmp_path / "new" / MARKER).read_text())
    assert marker["diffpir_output"]["created_by"]["package"] == "diffpir-flow"
    (tmp_path / "new" / "results.txt").write_text("ours now")
    claim_output(str(tmp_path / "new"), str(tmp_path / "images"))  # not empty, but ours
    (tmp_path / "empty").mkdir()
    claim_output(str(tmp_path / "empty"), str(tmp_path / "images"))
    assert is_ours(str(tmp_path / "empty"))


def test_someone_elses_files_are_refused_unless_forced_and_then_left_alone(tmp_path):
    foreign = tmp_path / "theirs"
    (foreign / "restored.zarr").mkdir(parents=True)
    (foreign / "restored.zarr" / "zarr.json").write_text("{}")
    with pytest.raises(OutputRefused, match=r"not empty and holds no diffpir-output.json.*--force"):
        claim_output(str(foreign), str(tmp_path / "images"))
    assert not is_ours(str(foreign))
    claim_output(str(foreign), str(tmp_path / "images"), force=True)
    assert is_ours(str(foreign)) and (foreign / "restored.zarr" / "zarr.json").read_text() == "{}"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefused, match="is a file"):
        claim_output(str(tmp_path / "file"), str(tmp_path / "images"), force=True)


def test_an_output_inside_the_input_is_refused_even_when_forced(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "link").symlink_to(images)
    for output in (images, images / "out", tmp_path / "link" / "out"):
        with pytest.raises(OutputRefused, match="inside the input .* read its own results back as input images"):
            claim_output(str(output), str(images), force=True)
    assert not is_inside(str(tmp_path / "images-out"), str(images))  # a sibling that shares a prefix
    claim_output(str(tmp_path / "images-out"), str(images))


def test_s3_prefixes_are_checked_the_same_way(s3_bucket, s3_options):
    fs = s3fs.S3FileSystem(**s3_options)
    fs.pipe_file(f"{s3_bucket}/theirs/data.bin", b"x")
    with pytest.raises(OutputRefused, match="not empty"):
        claim_output(f"{s3_bucket}/theirs", f"{s3_bucket}/images", s3_options)
    with pytest.raises(OutputRefused, match="inside the input"):
        claim_output(f"{s3_bucket}/images/out", f"{s3_bucket}/images", s3_options)
    claim_output(f"{s3_bucket}/mine", f"{s3_bucket}/images", s3_options)
    assert fs.exists(f"{s3_bucket}/mine/{MARKER}") and is_ours(f"{s3_bucket}/mine", s3_options)
