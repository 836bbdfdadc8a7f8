from __future__ import annotations

import pytest

from filesync.kinds import detect, image_size
from filesync.model import Kind
from tests.media import image_bytes, video_bytes

JPEG = image_bytes("JPEG", size=(40, 30))
PNG = image_bytes("PNG", size=(16, 9))
MP4 = video_bytes(4096)
MOV = video_bytes(4096, b"qt  ")


@pytest.mark.parametrize(
    ("path", "content_type", "head", "expected"),
    [
        ("a.jpg", "image/jpeg", JPEG, (Kind.IMAGE, "image/jpeg")),
        ("a.png", None, PNG, (Kind.IMAGE, "image/png")),
        ("noext", None, JPEG, (Kind.IMAGE, "image/jpeg")),  # bytes decide when name and header say nothing
        ("noext", "application/octet-stream", MP4, (Kind.VIDEO, "video/mp4")),
        ("clip.mov", "video/quicktime", MOV, (Kind.VIDEO, "video/quicktime")),
        ("photo.jpg", "video/mp4", JPEG, (Kind.IMAGE, "image/jpeg")),  # disagreement: bytes decide
        ("fake.jpg", None, b"%PDF-1.4 hello", (Kind.OTHER, "application/pdf")),  # a PDF named .jpg
        ("doc.pdf", "application/pdf", b"%PDF-1.4", (Kind.OTHER, "application/pdf")),
        ("blob", None, b"", (Kind.OTHER, "application/octet-stream")),
        ("x.heic", "image/heic", image_bytes("HEIC", size=(8, 8)), (Kind.IMAGE, "image/heic")),
    ],
)
def test_detect(path: str, content_type: str | None, head: bytes, expected: tuple[Kind, str]) -> None:
    assert detect(path, content_type, head) == expected


def test_image_size_from_header_bytes() -> None:
    assert image_size(JPEG) == (40, 30)
    assert image_size(PNG[:200]) == (16, 9)  # the header alone is enough for PNG
    assert image_size(b"not an image") is None
