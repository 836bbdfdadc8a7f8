"""Decide what a file is: extension, Content-Type, and where those disagree or are missing, magic bytes."""

from __future__ import annotations

import io
import mimetypes
from pathlib import PurePosixPath

import filetype

from filesync.model import Kind

#: Bytes read from the start of an object to sniff its type and, for images, its dimensions.
HEAD_BYTES = 256 * 1024

_GENERIC = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}

# mimetypes misses or misnames these on many systems.
_EXTRA = {
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mov": "video/quicktime",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".3gp": "video/3gpp",
    ".mts": "video/mp2t",
    ".ts": "video/mp2t",
}


def kind_of(mime: str) -> Kind:
    major = mime.split("/", 1)[0]
    return Kind(major) if major in (Kind.IMAGE, Kind.VIDEO) else Kind.OTHER


def mime_from_extension(path: str) -> str | None:
    ext = PurePosixPath(path).suffix.lower()
    if not ext:
        return None
    return _EXTRA.get(ext) or mimetypes.types_map.get(ext)


def sniff(head: bytes) -> str | None:
    if not head:
        return None
    guess = filetype.guess(head)
    return guess.mime if guess else None


def detect(path: str, content_type: str | None, head: bytes) -> tuple[Kind, str]:
    """(kind, MIME type). Agreement of name and header wins; otherwise the bytes decide."""
    by_ext = mime_from_extension(path)
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    by_header = None if ct in _GENERIC else ct
    if by_ext and by_header and kind_of(by_ext) == kind_of(by_header):
        return kind_of(by_header), by_header
    sniffed = sniff(head)
    mime = sniffed or by_header or by_ext or "application/octet-stream"
    return kind_of(mime), mime


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the image header, when the first bytes hold it."""
    try:
        from PIL import Image

        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:  # pragma: no cover - optional codec
            pass
        try:
            with Image.open(io.BytesIO(head)) as img:
                width, height = img.size
                return int(width), int(height)
        except Image.DecompressionBombError:
            return _header_size(head)  # a bomb still has a size: the transform step refuses it by it
    except Exception:
        return None


def _header_size(head: bytes) -> tuple[int, int] | None:
    """The size a header declares, read by Pillow's format plugins without Image.open's bomb check."""
    from PIL import Image

    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(head[:16]):
            continue
        try:
            img = factory(io.BytesIO(head), "")
        except Exception:
            continue
        width, height = img.size
        return int(width), int(height)
    return None
