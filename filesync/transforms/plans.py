"""From what the pipeline already knows (MIME type, size, header dimensions): send the original, or derive.

Cheap by design: nothing here decodes an image.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import features

from filesync.errors import ErrorClass, Refused
from filesync.model import Kind
from filesync.sinks import Capabilities
from filesync.transforms.spec import TransformSpec

#: Pixels (width x height, times frames for animations) we agree to decode; larger headers are refused.
MAX_PIXELS = 200_000_000

JPEG, PNG, GIF, WEBP, AVIF = "image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"
#: What we decode (MIME type -> Pillow format) and what we write.
DECODERS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF", WEBP: "WEBP", "image/tiff": "TIFF", "image/bmp": "BMP",
            "image/x-ms-bmp": "BMP", "image/heic": "HEIF", "image/heif": "HEIF", AVIF: "AVIF"}
ENCODERS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF", WEBP: "WEBP", AVIF: "AVIF"}
_LOSSLESS_SOURCES = {PNG, GIF, "image/tiff", "image/bmp", "image/x-ms-bmp"}


class TransformError(Refused):
    """The image cannot be made acceptable to the destination (cannot fit, a bomb, undecodable): parked with
    the reason, as a file the destination refuses."""

    error_class = ErrorClass.INVALID


@dataclass(frozen=True)
class Plan:
    """Why and into what an image will be derived; limits are the destination's, narrowed by `max=`."""

    spec: TransformSpec
    source_mime: str
    target_mime: str
    reasons: tuple[str, ...]
    max_bytes: int | None
    max_side: int | None
    max_area: int | None
    accepted: frozenset[str] | None  # None: any image
    max_pixels: int = MAX_PIXELS

    def accepts(self, mime: str) -> bool:
        return self.accepted is None or mime in self.accepted


def plan(spec: TransformSpec, mime: str, size: int, width: int | None, height: int | None,
         capabilities: Capabilities, *, max_pixels: int = MAX_PIXELS) -> Plan | None:
    """None when the original goes as it is; raises TransformError for a header over `max_pixels`."""
    if not spec.enabled or mime not in DECODERS or Kind.IMAGE not in capabilities.kinds:
        return None
    if mime == AVIF and not features.check("avif"):  # this Pillow cannot read it: the destination decides
        return None
    caps, reasons = capabilities, []
    side = min((x for x in (caps.max_dimension, spec.max_side) if x is not None), default=None)
    if caps.mimes is not None and mime not in caps.mimes:
        reasons.append(f"{mime} is not accepted")
    if caps.max_bytes is not None and size > caps.max_bytes:
        reasons.append(f"{size} bytes is over {caps.max_bytes}")
    if width and height and side is not None and max(width, height) > side:
        reasons.append(f"{width}x{height} px is over {side} px per side")
    if width and height and caps.max_area is not None and width * height > caps.max_area:
        reasons.append(f"{width}x{height} px is over {caps.max_area} pixels")
    profile = spec.profile if mime != GIF else None
    if profile:
        reasons.append(f"profile {spec}")
    if not reasons:
        return None
    if width and height and width * height > max_pixels:
        raise TransformError(bomb_reason(width, height, max_pixels))
    if profile:
        candidates = [profile]
    else:
        candidates = [mime] if mime in ENCODERS and (mime != AVIF or features.check("avif")) else []
        candidates += [PNG, JPEG, WEBP] if mime in _LOSSLESS_SOURCES else [JPEG, PNG, WEBP]
    target = next((c for c in candidates if caps.mimes is None or c in caps.mimes), None)
    if target is None:
        raise TransformError(f"no format this destination accepts for {mime} (tried {', '.join(candidates)})")
    return Plan(spec, mime, target, tuple(reasons), caps.max_bytes, side, caps.max_area, caps.mimes, max_pixels)


def bomb_reason(width: int, height: int, limit: int, frames: int = 1) -> str:
    what = f"{frames} frames of {width}x{height}" if frames > 1 else f"{width}x{height}"
    return f"decompression bomb refused: {what} is {width * height * frames:,} pixels, over {limit:,}"
