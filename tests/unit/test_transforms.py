"""Images made here with Pillow and pillow-heif go through plan() and apply() against declared limits."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pillow_heif
import pytest
from PIL import Image, ImageChops, ImageSequence, features

from filesync.errors import ErrorClass, Refused, classify
from filesync.model import Kind
from filesync.sinks import Capabilities
from filesync.transforms import (
    FIT,
    NONE,
    DecodeBudget,
    Derived,
    ExifPolicy,
    TransformError,
    TransformSpec,
    apply,
    parse_spec,
    parse_transforms,
    plan,
    spec_for,
)
from filesync.transforms.images import _banded

pillow_heif.register_heif_opener()

TEN_MB = 10_000_000
# Cloudflare Images as the issue states its limits.
IMAGES = Capabilities(kinds=frozenset({Kind.IMAGE}), max_bytes=TEN_MB, max_dimension=12_000, max_area=100_000_000,
                      mimes=frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/svg+xml",
                                       "image/heic", "image/avif"}))
# The same limits, for a destination that does not take HEIC.
NO_HEIC = Capabilities(kinds=IMAGES.kinds, max_bytes=TEN_MB, max_dimension=12_000, max_area=100_000_000,
                       mimes=frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"}))
ANY = Capabilities(kinds=frozenset({Kind.IMAGE, Kind.VIDEO, Kind.OTHER}))  # a file store: bunny, s3, local

RED, BLUE = (255, 0, 0), (0, 0, 255)
GPS_IFD, EXIF_IFD, ORIENTATION, MAKE, DATE_TAKEN = 0x8825, 0x8769, 0x0112, 0x010F, 0x9003


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def camera_exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[DATE_TAKEN] = "2024:05:01 10:00:00"
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)})
    return exif.tobytes()


def marked(size: tuple[int, int]) -> Image.Image:
    """Blue, with a red square in the stored top-left corner: shows how the result was turned."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[1] // 4, size[1] // 4))
    return im


def derive(spec: TransformSpec, data: bytes, mime: str, caps: Capabilities, **kw: Any) -> Derived:
    with Image.open(io.BytesIO(data)) as probe:
        width, height = probe.size
    p = plan(spec, mime, len(data), width, height, caps)
    assert p is not None, "expected a transform"
    return apply(p, io.BytesIO(data), len(data), **kw)


def opened(derived: Derived) -> Image.Image:
    body = derived.body.read()
    assert derived.body.tell() == derived.size == len(body)
    return Image.open(io.BytesIO(body))


def within(caps: Capabilities, derived: Derived) -> None:
    assert caps.max_bytes is not None and derived.size <= caps.max_bytes
    assert caps.max_dimension is not None and max(derived.width, derived.height) <= caps.max_dimension
    assert caps.max_area is not None and derived.width * derived.height <= caps.max_area
    assert caps.mimes is not None and derived.mime in caps.mimes


def close_to(pixel: Any, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


# --- the setting ---------------------------------------------------------------------------------------------


def test_parse_the_issue_example() -> None:
    specs = parse_transforms("cloudflare-images=fit; bunny=webp:q=80,max=2560 ;")
    assert specs == {"cloudflare-images": FIT, "bunny": TransformSpec("webp", quality=80, max_side=2560)}
    assert str(specs["bunny"]) == "webp:q=80,max=2560"
    assert parse_spec(str(specs["bunny"])) == specs["bunny"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", NONE),
        ("none", NONE),
        ("jpg:q=85", TransformSpec("jpeg", quality=85)),
        ("JPEG:q=85", TransformSpec("jpeg", quality=85)),
        ("png", TransformSpec("png")),
        ("fit:max=4000,exif=keep", TransformSpec("fit", max_side=4000, exif=ExifPolicy.KEEP)),
        ("fit:exif=strip", TransformSpec("fit", exif=ExifPolicy.STRIP)),
        ("fit", TransformSpec("fit", exif=ExifPolicy.STRIP_GPS)),
    ],
)
def test_parse_spec(text: str, expected: TransformSpec) -> None:
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("bunny", "not SINK=TRANSFORM"),
        ("=fit", "not SINK=TRANSFORM"),
        ("bunny=", "not SINK=TRANSFORM"),
        ("bunny=gif", "unknown transform 'gif'"),
        ("bunny=webp:q=0", "q='0': expected 1 to 100"),
        ("bunny=webp:q=high", "q='high'"),
        ("bunny=webp:max=8", "max='8': expected pixels"),
        ("bunny=fit:exif=maybe", "exif='maybe'"),
        ("bunny=webp:quality=80", "unknown option 'quality=80'"),
        ("bunny=webp:q=80,q=70", "q= is given twice"),
        ("bunny=png:q=80", "png is lossless"),
        ("bunny=none:q=80", "takes no options"),
        ("bunny=fit;bunny=none", "bunny is given twice"),
    ],
)
def test_parse_refuses_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_transforms(raw)
    assert reason in str(info.value)
    assert "bunny" in str(info.value) or "=fit" in str(info.value)  # names the destination or quotes the part


def test_avif_only_where_pillow_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    if features.check("avif"):
        assert parse_spec("avif:q=60") == TransformSpec("avif", quality=60)
    monkeypatch.setattr(features, "check", lambda name: False)
    with pytest.raises(ValueError, match="cannot write AVIF"):
        parse_spec("avif")


def test_cloudflare_images_fits_by_default_and_can_be_switched_off() -> None:
    assert spec_for("cloudflare-images", {}) == FIT
    assert spec_for("cloudflare-images", parse_transforms("cloudflare-images=off")) == NONE
    assert spec_for("bunny", {}) == NONE
    assert spec_for("bunny", parse_transforms("bunny=jpeg:q=85")) == TransformSpec("jpeg", quality=85)


# --- plan: cheap, and None whenever the original can go ----------------------------------------------------


def test_acceptable_originals_are_not_planned() -> None:
    jpeg = encode(marked((400, 300)), "JPEG")
    assert plan(FIT, "image/jpeg", len(jpeg), 400, 300, IMAGES) is None  # the original goes, byte for byte
    assert plan(NONE, "image/heic", 200_000_000, 20_000, 20_000, NO_HEIC) is None  # switched off
    assert plan(FIT, "image/heic", 2_000_000, 4000, 3000, IMAGES) is None  # Cloudflare Images takes HEIC
    assert plan(FIT, "video/mp4", 500_000_000, 4000, 3000, IMAGES) is None  # videos are never transformed
    assert plan(FIT, "image/svg+xml", 20_000_000, None, None, IMAGES) is None  # not a raster we decode
    assert plan(TransformSpec("webp"), "image/gif", 50_000_000, 400, 300, ANY) is None  # profiles leave GIFs alone


def test_plan_says_why_and_into_what() -> None:
    p = plan(FIT, "image/jpeg", 12_000_000, 13_000, 9_000, IMAGES)
    assert p is not None and p.target_mime == "image/jpeg"
    assert p.reasons == ("12000000 bytes is over 10000000", "13000x9000 px is over 12000 px per side",
                         "13000x9000 px is over 100000000 pixels")
    heic = plan(FIT, "image/heic", 3_000_000, 4032, 3024, NO_HEIC)
    assert heic is not None and heic.target_mime == "image/jpeg" and heic.reasons == ("image/heic is not accepted",)
    tiff = plan(FIT, "image/tiff", 3_000_000, 100, 100, IMAGES)
    assert tiff is not None and tiff.target_mime == "image/png"
    limited = plan(parse_spec("fit:max=2000"), "image/png", 1000, 3000, 1000, ANY)
    assert limited is not None and limited.max_side == 2000 and limited.target_mime == "image/png"
    assert plan(parse_spec("webp:q=80"), "image/jpeg", 1000, 30, 20, ANY) is not None  # a profile always applies


def test_a_profile_the_destination_refuses_is_an_error() -> None:
    with pytest.raises(TransformError, match="no format this destination accepts"):
        plan(TransformSpec("avif"), "image/jpeg", 1000, 30, 20, NO_HEIC)


def test_transform_errors_park_the_file() -> None:
    err = TransformError("too big")
    assert isinstance(err, Refused)  # as a file the destination refuses, it is parked with its reason
    assert classify(err) == (ErrorClass.INVALID, None, False)


# --- apply --------------------------------------------------------------------------------------------------


def test_13000_px_jpeg_is_fitted_to_12000() -> None:
    data = encode(Image.linear_gradient("L").resize((13_000, 300)).convert("RGB"), "JPEG", quality=90,
                  exif=camera_exif())
    with derive(FIT, data, "image/jpeg", IMAGES) as d:
        within(IMAGES, d)
        assert (d.mime, d.width, d.height) == ("image/jpeg", 12_000, 277)
        assert (d.original.width, d.original.height, d.original.size) == (13_000, 300, len(data))
        assert d.description == "fit 13000x300→12000x277 jpeg q=90"
        out = opened(d)
        assert out.format == "JPEG" and out.size == (12_000, 277)
        exif = out.getexif()
        assert exif[MAKE] == "TestCam" and GPS_IFD not in exif  # strip-gps by default


def test_large_jpeg_is_reduced_while_decoding() -> None:
    data = encode(marked((4000, 3000)), "JPEG")
    asked: list[int] = []

    class Recording(DecodeBudget):
        @contextmanager
        def hold(self, nbytes: int) -> Iterator[None]:
            asked.append(nbytes)
            yield

    with derive(parse_spec("fit:max=1000"), data, "image/jpeg", ANY, budget=Recording(0)) as d:
        assert (d.width, d.height) == (1000, 750)
    # libjpeg decoded at 1/4 scale: the source held 1000x750 pixels, not 4000x3000
    assert asked == [1000 * 750 * 4 * 2]


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])  # RGBA: an alpha channel that is all opaque
def test_png_over_10_mb_becomes_a_jpeg_that_fits(mode: str) -> None:
    side = (2200, 2150)  # random pixels do not compress: about 14 MB as PNG
    im = Image.frombytes("RGB", side, os.urandom(side[0] * side[1] * 3))
    if mode == "RGBA":
        im.putalpha(255)
    data = encode(im, "PNG", compress_level=1)
    assert len(data) > 14_000_000
    with derive(FIT, data, "image/png", IMAGES) as d:
        within(IMAGES, d)
        assert (d.mime, d.width, d.height) == ("image/jpeg", *side)  # no alpha: JPEG keeps every pixel
        assert d.description.startswith("fit 2200x2150 png→jpeg q=")
        assert opened(d).format == "JPEG"


def test_png_with_alpha_over_10_mb_stays_png_and_is_downscaled() -> None:
    side = (1700, 1600)
    data = encode(Image.frombytes("RGBA", side, os.urandom(side[0] * side[1] * 4)), "PNG", compress_level=1)
    assert len(data) > TEN_MB
    with derive(FIT, data, "image/png", IMAGES) as d:
        within(IMAGES, d)
        assert d.mime == "image/png" and d.width < 1700 and abs(d.width / d.height - 1700 / 1600) < 0.01
        assert "shrunk" in d.description
        assert opened(d).mode == "RGBA"


def heic_photo() -> bytes:
    return encode(marked((640, 320)), "HEIF", exif=camera_exif(orientation=6), quality=90)


@pytest.mark.parametrize(
    ("exif", "gps", "camera"),
    [(ExifPolicy.STRIP_GPS, False, True), (ExifPolicy.KEEP, True, True), (ExifPolicy.STRIP, False, False)],
)
def test_heic_becomes_an_upright_jpeg_with_the_exif_asked_for(exif: ExifPolicy, gps: bool, camera: bool) -> None:
    with derive(TransformSpec("fit", exif=exif), heic_photo(), "image/heic", NO_HEIC) as d:
        within(NO_HEIC, d)
        assert (d.mime, d.width, d.height) == ("image/jpeg", 320, 640)  # orientation 6: turned a quarter
        out = opened(d)
        assert close_to(out.getpixel((319 - 20, 20)), RED)  # the stored top-left is now the top-right
        assert close_to(out.getpixel((20, 20)), BLUE)
        meta = out.getexif()
        assert meta.get(ORIENTATION, 1) == 1  # upright pixels, so no viewer turns them again
        assert (GPS_IFD in meta) is gps
        assert (meta.get(MAKE) == "TestCam") is camera
        assert (meta.get_ifd(EXIF_IFD).get(DATE_TAKEN) == "2024:05:01 10:00:00") is camera


def test_jpeg_orientation_is_applied_and_xmp_dropped() -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>48,51N</exif:GPSLatitude></x:xmpmeta>'
    data = encode(marked((640, 320)), "JPEG", quality=95, exif=camera_exif(orientation=6), xmp=xmp)
    assert "xmp" in Image.open(io.BytesIO(data)).info
    with derive(parse_spec("jpeg:q=80"), data, "image/jpeg", ANY) as d:
        assert (d.width, d.height) == (320, 640) and d.description == "jpeg 640x320→320x640 jpeg q=80 upright"
        out = opened(d)
        assert close_to(out.getpixel((299, 20)), RED) and close_to(out.getpixel((20, 20)), BLUE)
        assert "xmp" not in out.info and GPS_IFD not in out.getexif() and out.getexif()[ORIENTATION] == 1


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_tiff_and_bmp_become_png_without_loss(fmt: str) -> None:
    source = marked((300, 200))
    data = encode(source, fmt)
    with derive(FIT, data, f"image/{fmt.lower()}", IMAGES) as d:
        within(IMAGES, d)
        assert d.mime == "image/png" and d.description == f"fit 300x200 {fmt.lower()}→png"
        out = opened(d)
        assert out.format == "PNG" and list(out.convert("RGB").getdata()) == list(source.getdata())
        assert 273 not in out.getexif()  # TIFF's strip offsets are not carried as EXIF


def animation(size: tuple[int, int], colours: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", size, c) for c in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)


def test_animated_gif_keeps_every_frame_when_resized() -> None:
    colours = [RED, (0, 255, 0), BLUE]
    data = animation((200, 100), colours)
    small = Capabilities(kinds=frozenset({Kind.IMAGE}), max_dimension=100, mimes=frozenset({"image/gif"}))
    assert plan(FIT, "image/gif", len(data), 200, 100, ANY) is None  # within limits: sent as it is
    with derive(FIT, data, "image/gif", small) as d:
        assert (d.mime, d.width, d.height) == ("image/gif", 100, 50)
        assert d.description == "fit 200x100→100x50 gif 3 frames"
        out = opened(d)
        frames = [(f.convert("RGB").getpixel((50, 25)), f.info["duration"]) for f in ImageSequence.Iterator(out)]
        assert frames == [(RED, 100), ((0, 255, 0), 200), (BLUE, 300)]
        assert out.info["loop"] == 0


def test_an_animation_too_large_to_resize_is_refused() -> None:
    data = animation((200, 100), [RED, (0, 255, 0), BLUE])
    small = Capabilities(kinds=frozenset({Kind.IMAGE}), max_dimension=100)
    p = plan(FIT, "image/gif", len(data), 200, 100, small, max_pixels=40_000)
    assert p is not None
    with pytest.raises(TransformError, match="3 frames of 200x100 is 60,000 pixels, over 40,000"):
        apply(p, io.BytesIO(data), len(data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height gray pixels; a few bytes of image data follow."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_header_only(30_000, 30_000)
    assert len(bomb) < 200
    with pytest.raises(TransformError, match="decompression bomb refused: 30000x30000 is 900,000,000 pixels"):
        plan(FIT, "image/png", len(bomb), 30_000, 30_000, IMAGES)
    unknown = plan(parse_spec("webp"), "image/png", len(bomb), None, None, ANY)  # dimensions not known up front
    assert unknown is not None
    with pytest.raises(TransformError, match="decompression bomb refused") as info:
        apply(unknown, io.BytesIO(bomb), len(bomb))
    assert info.value.error_class is ErrorClass.INVALID


def test_our_own_pixel_limit_is_checked_before_decoding() -> None:
    bomb = png_header_only(10_000, 10_000)  # under Pillow's guard (raised to MAX_PIXELS), over ours below
    p = plan(parse_spec("webp"), "image/png", len(bomb), None, None, ANY, max_pixels=50_000_000)
    assert p is not None
    with pytest.raises(TransformError, match="10000x10000 is 100,000,000 pixels, over 50,000,000"):
        apply(p, io.BytesIO(bomb), len(bomb))


def test_what_cannot_fit_fails_with_the_reason() -> None:
    data = encode(Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)), "JPEG", quality=95)
    tiny = Capabilities(kinds=frozenset({Kind.IMAGE}), max_bytes=2_000)
    with pytest.raises(TransformError, match=r"cannot fit 2000 bytes: .* as jpeg at .* q=50"):
        derive(FIT, data, "image/jpeg", tiny)


def test_undecodable_bytes_fail_with_the_reason() -> None:
    data = b"\xff\xd8\xff\xe0 not really a jpeg" * 10
    p = plan(parse_spec("webp"), "image/jpeg", len(data), None, None, ANY)
    assert p is not None
    with pytest.raises(TransformError, match="cannot decode image/jpeg"):
        apply(p, io.BytesIO(data), len(data))


def test_webp_profile_from_a_stream_that_cannot_seek() -> None:
    data = encode(marked((1000, 750)), "JPEG", exif=camera_exif())

    class Stream(io.RawIOBase):  # like an S3 response body
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.inner.readinto(b)

    p = plan(parse_spec("webp:q=80,max=256"), "image/jpeg", len(data), 1000, 750, ANY)
    assert p is not None
    with apply(p, Stream(), len(data)) as d:  # type: ignore[arg-type]
        assert (d.mime, d.width, d.height, d.ext) == ("image/webp", 256, 192, ".webp")
        assert d.description == "webp 1000x750→256x192 jpeg→webp q=80"
        out = opened(d)
        assert out.format == "WEBP" and out.getexif()[MAKE] == "TestCam" and GPS_IFD not in out.getexif()


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow build cannot write AVIF")
def test_avif_profile() -> None:
    data = encode(marked((300, 200)), "PNG")
    with derive(parse_spec("avif:q=60"), data, "image/png", ANY) as d:
        assert d.mime == "image/avif" and opened(d).format == "AVIF"


def test_jpeg_profile_flattens_alpha_onto_white() -> None:
    im = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 30, 40))
    with derive(parse_spec("jpeg:q=90"), encode(im, "PNG"), "image/png", ANY) as d:
        out = opened(d)
        assert d.mime == "image/jpeg" and out.mode == "RGB"
        assert close_to(out.getpixel((5, 20)), RED) and close_to(out.getpixel((55, 20)), (255, 255, 255))


def test_lossy_source_with_alpha_becomes_png_where_webp_is_refused() -> None:
    im = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 30, 40))
    jpeg_png = Capabilities(kinds=frozenset({Kind.IMAGE}), mimes=frozenset({"image/jpeg", "image/png"}))
    with derive(FIT, encode(im, "WEBP", lossless=True), "image/webp", jpeg_png) as d:
        out = opened(d)
        assert d.mime == "image/png" and out.mode == "RGBA" and out.getchannel("A").getpixel((55, 20)) == 0


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    with derive(parse_spec("fit:max=32"), encode(Image.new("I;16", (64, 64), 40_000), "PNG"), "image/png", ANY) as d:
        out = opened(d)
        assert (d.width, out.mode) == (32, "L") and out.getpixel((16, 16)) == 40_000 // 256


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_resizing_in_bands_matches_resizing_whole(mode: str) -> None:
    size, target = (1999, 1333), (1234, 823)
    im = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))
    whole = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    banded = _banded(im, *target, 100)
    assert banded.size == target and banded.mode == mode
    assert max(ImageChops.difference(whole, banded).tobytes()) <= 1  # float rounding only: no seams


@pytest.mark.timeout(60)  # a broken budget would wait forever: fail instead
def test_the_budget_makes_a_second_transform_wait() -> None:
    budget = DecodeBudget(100)
    entered = threading.Event()

    def second() -> None:
        with budget.hold(50):
            entered.set()

    with budget.hold(80):
        worker = threading.Thread(target=second, daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while budget.waiting == 0 and not entered.is_set():  # until the second one waits for room
            assert time.monotonic() < deadline and worker.is_alive(), "the second transform never asked for room"
            time.sleep(0.001)
        assert not entered.is_set() and budget.used == 80
    worker.join(timeout=30)
    assert entered.is_set() and budget.used == 0 and budget.waiting == 0
    with budget.hold(500):  # more than the whole budget: runs when alone
        assert budget.used == 500
