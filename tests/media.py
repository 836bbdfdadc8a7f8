"""Generated sample media for tests: real image encodings and ISO-BMFF video containers of any size."""

from __future__ import annotations

import io
import os
import struct


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (320, 240), color: str = "teal") -> bytes:
    from PIL import Image

    if fmt.upper() in {"HEIC", "HEIF"}:
        import pillow_heif  # type: ignore[import-untyped]

        pillow_heif.register_heif_opener()
        fmt = "HEIF"
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def video_bytes(n: int, brand: bytes = b"isom") -> bytes:
    """An MP4 (brand isom) or MOV (brand 'qt  ') container of exactly `n` bytes, random payload."""
    ftyp_body = brand + struct.pack(">I", 512) + brand + b"mp41"
    ftyp = struct.pack(">I", 8 + len(ftyp_body)) + b"ftyp" + ftyp_body
    payload = n - len(ftyp) - 8
    assert payload >= 0, "video too small"
    return ftyp + struct.pack(">I", 8 + payload) + b"mdat" + os.urandom(payload)
