"""Derive the copy a plan asks for: decode once, resize, turn upright, re-encode until it fits."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

import pillow_heif
from PIL import Image

from filesync.transforms.plans import (
    AVIF,
    DECODERS,
    ENCODERS,
    GIF,
    JPEG,
    MAX_PIXELS,
    PNG,
    WEBP,
    Plan,
    TransformError,
    bomb_reason,
)
from filesync.transforms.spec import ExifPolicy

#: Decoded bytes all transforms of this process may hold at once (see DecodeBudget).
DECODE_BUDGET_BYTES = 1 << 30
#: Outputs and non-seekable sources stay in memory up to this size, then go to a temporary file.
SPOOL_BYTES = 8 << 20
QUALITY_FLOOR, QUALITY_STEP = 50, 5
#: After the quality floor, shrink by at most this much per side before giving up.
MIN_SHRINK = 0.5
#: Outputs larger than this are resized in bands of rows, so no full-width intermediate is held beside them.
BAND_PIXELS, BAND_ROWS = 4_000_000, 512

pillow_heif.register_heif_opener()
Image.init()
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's guard warns at 89.5 MP, under Cloudflare's own 100 MP
if "PILLOW_BLOCK_SIZE" not in os.environ:
    # Pillow allocates pixels in 16 MiB blocks; glibc serves those from per-thread arenas that keep freed memory,
    # so four threads ended up holding four images' worth after each had freed its own (bench/transform_memory.py).
    # Blocks over glibc's largest mmap threshold (32 MiB) are mapped and unmapped, and go back to the system.
    Image.core.set_block_size(64 << 20)  # type: ignore[attr-defined]

_LOSSY = {JPEG, WEBP, AVIF}
_ANIMATED = {GIF, PNG, WEBP}
_MAX_SIDE = {JPEG: 65_500, WEBP: 16_383, GIF: 65_535}
_FORMAT_MIME = {"JPEG": JPEG, "MPO": JPEG, "PNG": PNG, "GIF": GIF, "WEBP": WEBP, "TIFF": "image/tiff",
                "BMP": "image/bmp", "HEIF": "image/heif", "AVIF": AVIF}
EXTENSIONS = {JPEG: ".jpg", PNG: ".png", GIF: ".gif", WEBP: ".webp", AVIF: ".avif"}
_START_QUALITY = {JPEG: 85, WEBP: 80, AVIF: 65}  # profiles without q=; fit starts at 90
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_ORIENTATION, _GPS_IFD = 0x0112, 0x8825
#: TIFF tags describing the file's own layout, plus XMP, IPTC, Photoshop and ICC blocks: not EXIF to carry over.
_TIFF_ONLY = {256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 338, 339, 700,
              33723, 34377, 34675, 37724}
_OPEN_FORMATS = sorted(f for f in {*DECODERS.values(), "MPO"} if f in Image.OPEN)




class DecodeBudget:
    """A weighted semaphore over decoded bytes, shared by the transfer slots of one process.

    A transform waits until its estimate fits beside the others; one larger than the whole budget runs alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.waiting = limit, 0, 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        with self._cond:
            self.waiting += 1
            self._cond.wait_for(lambda: self.used == 0 or self.used + nbytes <= self.limit)
            self.waiting -= 1
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


DEFAULT_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES)


@dataclass(frozen=True)
class ImageFacts:
    """The original as the ledger records it: dimensions as stored (before EXIF orientation)."""

    size: int
    width: int
    height: int
    mime: str


@dataclass(frozen=True)
class Derived:
    """The derived copy: `body` is seekable, at 0, `size` bytes long; close it (or use `with`) when sent."""

    body: IO[bytes]
    mime: str
    size: int
    width: int
    height: int
    original: ImageFacts
    description: str  # e.g. "fit 13000x9000→12000x8308 jpeg q=90"

    @property
    def ext(self) -> str:
        return EXTENSIONS[self.mime]

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Derived:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def apply(plan: Plan, source: BinaryIO, size: int, *, budget: DecodeBudget | None = DEFAULT_BUDGET) -> Derived:
    """Derive the copy `plan` asks for from the whole of `source` (`size` bytes, the original)."""
    with ExitStack() as stack:
        if not source.seekable():
            spool = stack.enter_context(tempfile.SpooledTemporaryFile(SPOOL_BYTES))
            shutil.copyfileobj(source, spool, 1 << 20)
            source = spool  # type: ignore[assignment]
        try:
            im = stack.enter_context(Image.open(source, formats=_OPEN_FORMATS))
            return _derive(plan, im, size, budget or DecodeBudget(1 << 62))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TransformError(f"decompression bomb refused: {exc}") from None
        except OSError as exc:
            if exc.errno is not None:  # the disk or the source, not the image: let the pipeline classify it
                raise
            raise TransformError(f"cannot decode {plan.source_mime}: {exc}") from None
        except (ValueError, SyntaxError, EOFError) as exc:
            raise TransformError(f"cannot decode {plan.source_mime}: {exc}") from None


def _derive(plan: Plan, im: Image.Image, size: int, budget: DecodeBudget) -> Derived:
    width, height = im.size
    frames = getattr(im, "n_frames", 1) if im.format in ("GIF", "PNG", "WEBP") else 1
    if width * height * frames > plan.max_pixels:
        raise TransformError(bomb_reason(width, height, plan.max_pixels, frames))
    orientation = int(im.getexif().get(_ORIENTATION, 1)) if im.format != "GIF" else 1
    exif = _exif(im, plan.spec.exif)
    icc = im.info.get("icc_profile")
    alpha = im.has_transparency_data  # may be all opaque: decided again once decoded
    target = plan.target_mime
    if frames > 1 and target not in _ANIMATED:
        source = _FORMAT_MIME.get(im.format or "", "")
        if source not in ENCODERS or not plan.accepts(source):
            raise TransformError(f"an animated {im.format} cannot become {target}")
        target = source
    side = min(x for x in (plan.max_side, _MAX_SIDE.get(target, 1 << 30)) if x is not None)
    tw, th = _fit(width, height, side, plan.max_area)
    if frames * tw * th > plan.max_pixels:
        raise TransformError(f"an animation of {frames} frames at {tw}x{th} is over {plan.max_pixels:,} pixels")
    timing = _timing(im, frames)
    if im.format in ("JPEG", "MPO") and frames == 1:
        im.draft(None, (tw, th))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below the target size
    # The decoded source (other modes get a 4-byte working copy) and its resized copy; with alpha, Pillow
    # resizes a premultiplied copy of each.
    per_pixel = {"L": 1, "RGB": 4, "RGBA": 4, "LA": 4, "CMYK": 4}.get(im.mode, 6)
    cost = (im.size[0] * im.size[1] * per_pixel + frames * tw * th * 4) * (2 if alpha else 1)
    out: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_BYTES)
    try:
        with budget.hold(cost):
            if frames > 1:
                pictures = [_resized(im.convert("RGBA"), tw, th) for _ in _seek_all(im, frames)]
            else:
                im.load()
                pictures = [_upright(_resized(_working(im), tw, th), orientation)]
            alpha = pictures[0].mode in ("RGBA", "LA") and pictures[0].getextrema()[-1][0] < 255  # type: ignore[index]
            if target == JPEG and alpha and not plan.spec.profile and plan.accepts(PNG):
                target = PNG
            tries = _attempts(target, alpha, plan, resized=(tw, th) != (width, height))
            mime, quality, shrink = _encode(pictures, tries, plan, _Meta(exif, icc, timing), out)
            final = pictures[0].size
            del pictures
    except BaseException:
        out.close()
        raise
    nbytes = out.tell()
    out.seek(0)
    described = [plan.spec.mode, f"{width}x{height}→{final[0]}x{final[1]}" if (width, height) != final else
                 f"{width}x{height}"]
    source_fmt = _FORMAT_MIME.get(im.format or "", plan.source_mime)
    described.append(_short(mime) if source_fmt == mime else f"{_short(source_fmt)}→{_short(mime)}")
    described += [f"q={quality}"] if quality is not None else []
    described += [f"{frames} frames"] if frames > 1 else []
    described += ["upright"] if orientation in _TRANSPOSE else []
    described += [f"shrunk x{shrink:.2f} to fit {plan.max_bytes} bytes"] if shrink < 1 else []
    return Derived(out, mime, nbytes, final[0], final[1], ImageFacts(size, width, height, plan.source_mime),
                   " ".join(described))


def _short(mime: str) -> str:
    return mime.split("/")[-1].removeprefix("x-")


def _seek_all(im: Image.Image, frames: int) -> Iterator[int]:
    for n in range(frames):
        im.seek(n)
        yield n


def _timing(im: Image.Image, frames: int) -> dict[str, Any]:
    """Frame durations and loop count of an animation, read before its frames are re-made."""
    if frames == 1:
        return {}
    durations = [int(im.info.get("duration", 100)) for _ in _seek_all(im, frames)]
    im.seek(0)
    timing: dict[str, Any] = {"save_all": True, "duration": durations}
    if "loop" in im.info:  # absent: play once
        timing["loop"] = int(im.info["loop"])
    return timing


def _fit(width: int, height: int, side: int | None, area: int | None) -> tuple[int, int]:
    """The largest size of the same aspect within `side` px per side and `area` pixels."""
    scale = min(1.0, side / max(width, height) if side else 1.0, math.sqrt(area / (width * height)) if area else 1.0)
    if scale >= 1.0:
        return width, height
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    while (side and max(w, h) > side) or (area and w * h > area):
        w, h = (w - 1, h) if w >= h and w > 1 else (w, h - 1)
    return w, h


def _working(im: Image.Image) -> Image.Image:
    """A mode that resamples well (palette, 1-bit and 16-bit images are converted, and the source freed)."""
    if im.mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        working = im.convert("I").point(lambda v: v / 256).convert("L")
    else:
        working = im.convert("RGBA" if im.has_transparency_data else "RGB" if im.mode != "1" else "L")
    im.close()
    return working


def _resized(im: Image.Image, width: int, height: int) -> Image.Image:
    if im.size == (width, height):
        return im
    if width * height > BAND_PIXELS and im.mode in ("RGB", "L", "CMYK"):  # alpha: Pillow premultiplies a copy
        smaller = _banded(im, width, height, BAND_ROWS)
    else:
        smaller = im.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    im.close()  # frees the decoded source before the next step allocates
    return smaller


def _banded(im: Image.Image, width: int, height: int, rows: int) -> Image.Image:
    """`im.resize` a band of rows at a time: Pillow's two-pass resampling otherwise holds a full-width
    intermediate as large as the output beside the source and the output."""
    out = Image.new(im.mode, (width, height))
    scale = im.height / height
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        with im.resize((width, bottom - top), Image.Resampling.LANCZOS, (0, top * scale, im.width, bottom * scale),
                       reducing_gap=3.0) as band:
            out.paste(band, (0, top))
    return out


def _upright(im: Image.Image, orientation: int) -> Image.Image:
    if orientation not in _TRANSPOSE:
        return im
    turned = im.transpose(_TRANSPOSE[orientation])
    im.close()
    return turned


def _exif(im: Image.Image, policy: ExifPolicy) -> bytes | None:
    if policy is ExifPolicy.STRIP or im.format == "GIF":
        return None
    exif = im.getexif()
    for tag in _TIFF_ONLY & set(exif) if im.format == "TIFF" else ():
        del exif[tag]
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1  # the pixels are turned upright
    if policy is ExifPolicy.STRIP_GPS and _GPS_IFD in exif:
        del exif[_GPS_IFD]
    return exif.tobytes() if len(exif) else None


def _attempts(target: str, alpha: bool, plan: Plan, *, resized: bool) -> list[tuple[str, int | None]]:
    """(format, quality) tries at one size, lightest last; quality None: lossless, 0: lossless optimised."""
    def lossy(mime: str) -> list[tuple[str, int | None]]:
        start = plan.spec.quality or (_START_QUALITY[mime] if plan.spec.profile else 90)
        return [(mime, q) for q in range(start, min(start, QUALITY_FLOOR) - 1, -QUALITY_STEP)]

    if target in _LOSSY:
        return lossy(target)
    if target != PNG:
        return [(target, None)]
    tries: list[tuple[str, int | None]] = [(PNG, None)] if resized or plan.source_mime != PNG else []
    tries.append((PNG, 0))
    if not alpha and plan.spec.profile != PNG and plan.accepts(JPEG):
        tries += lossy(JPEG)
    return tries


@dataclass(frozen=True)
class _Meta:
    exif: bytes | None
    icc: bytes | None
    timing: dict[str, Any]


def _encode(pictures: list[Image.Image], tries: list[tuple[str, int | None]], plan: Plan, meta: _Meta,
            out: IO[bytes]) -> tuple[str, int | None, float]:
    """Write the first try that fits `plan.max_bytes`; past the lightest, shrink and write that one again."""
    shrink, limit = 1.0, plan.max_bytes if plan.max_bytes is not None else math.inf
    while True:
        for mime, quality in tries:
            out.seek(0)
            out.truncate()
            _save(pictures, mime, quality, meta, out)
            if out.tell() <= limit:
                return mime, quality or None, shrink
        factor = min(0.9, math.sqrt(limit / out.tell()) * 0.95)
        if shrink * factor < MIN_SHRINK:
            w, h = pictures[0].size
            raise TransformError(f"cannot fit {plan.max_bytes} bytes: {out.tell()} bytes as {_short(mime)} "
                                 f"at {w}x{h}{f' q={quality}' if quality else ''}, and smaller than x{MIN_SHRINK} "
                                 "is not tried")
        shrink *= factor
        for i, picture in enumerate(pictures):
            w, h = picture.size
            pictures[i] = _resized(picture, max(1, round(w * factor)), max(1, round(h * factor)))
        tries = tries[-1:]


def _save(pictures: list[Image.Image], mime: str, quality: int | None, meta: _Meta, out: IO[bytes]) -> None:
    first = _for_encoder(pictures[0], mime)
    first.info = {}  # only what is passed below is written (Pillow < 11 fell back to info's EXIF and XMP)
    params: dict[str, Any] = {}
    if meta.exif and mime != GIF:
        params["exif"] = meta.exif
    if meta.icc and mime != GIF:
        params["icc_profile"] = meta.icc
    if mime in _LOSSY:
        params["quality"] = quality
    elif mime == PNG and quality == 0:
        params["optimize"] = True
    if meta.timing:
        params.update(meta.timing, append_images=[_for_encoder(p, mime) for p in pictures[1:]])
    first.save(out, ENCODERS[mime], **params)


_ENCODER_MODES = {JPEG: ("L", "RGB", "CMYK"), PNG: ("L", "LA", "RGB", "RGBA"), GIF: ("L", "P", "RGB", "RGBA"),
                  WEBP: ("RGB", "RGBA"), AVIF: ("RGB", "RGBA")}


def _for_encoder(im: Image.Image, mime: str) -> Image.Image:
    """`im` in a mode the encoder writes; alpha is flattened onto white for JPEG."""
    if im.mode in _ENCODER_MODES[mime]:
        return im
    if mime == JPEG and im.mode in ("RGBA", "LA"):
        flat = Image.new(im.mode[0] if im.mode == "LA" else "RGB", im.size, "white")
        flat.paste(im, mask=im.getchannel("A"))
        return flat
    return im.convert("RGBA" if "A" in im.mode else "RGB")
