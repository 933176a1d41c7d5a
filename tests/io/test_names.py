"""Names that leave the store: exported PNG names and URIs written into attributes."""

from diffpir_core.io import png_names
from diffpir_core.io.uris import redact_uri


def test_png_names_keep_ids_and_never_collide():
    names = png_names(["a.jpg", "a.png", "b.tif", "sub/c.webp", "000017"])
    assert names == {
        "a.jpg": "a.jpg.png",
        "a.png": "a.png.png",
        "b.tif": "b.png",
        "sub/c.webp": "sub/c.png",
        "000017": "000017.png",
    }
    assert len(set(names.values())) == len(names)


def test_redact_uri_removes_credentials_only():
    assert redact_uri("s3://AKIA123:s3cret@bucket/data/x.png") == "s3://bucket/data/x.png"
    assert redact_uri("s3://bucket/data") == "s3://bucket/data"
    assert redact_uri("/local/user@host/x.png") == "/local/user@host/x.png"
