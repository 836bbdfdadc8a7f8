"""FILESYNC_TRANSFORMS: what each destination asks for (`none`, `fit`, or a compression profile)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from PIL import features

from filesync.settings import Setting, register

#: Compression profiles: the format each one writes.
PROFILES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif"}
_ALIASES = {"off": "none", "jpg": "jpeg"}


class ExifPolicy(StrEnum):
    KEEP = "keep"
    STRIP = "strip"
    STRIP_GPS = "strip-gps"


@dataclass(frozen=True)
class TransformSpec:
    """One destination's setting: `none`, `fit`, or a compression profile (an output format)."""

    mode: str  # "none" | "fit" | "jpeg" | "png" | "webp" | "avif"
    quality: int | None = None
    max_side: int | None = None
    exif: ExifPolicy = ExifPolicy.STRIP_GPS

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def profile(self) -> str | None:
        """The MIME type a compression profile writes; None for `none` and `fit`."""
        return PROFILES.get(self.mode)

    def __str__(self) -> str:
        opts = [f"q={self.quality}"] if self.quality is not None else []
        opts += [f"max={self.max_side}"] if self.max_side is not None else []
        opts += [f"exif={self.exif}"] if self.exif is not ExifPolicy.STRIP_GPS else []
        return self.mode + (":" + ",".join(opts) if opts else "")


NONE, FIT = TransformSpec("none"), TransformSpec("fit")
#: What a sink gets when FILESYNC_TRANSFORMS does not name it.
DEFAULTS = {"cloudflare-images": FIT}


def parse_transforms(raw: str) -> dict[str, TransformSpec]:
    """`SINK=SPEC;SINK=SPEC`, SPEC being `none|off|fit|jpeg|png|webp|avif` then `:q=N,max=PX,exif=keep|strip|strip-gps`.

    Raises ValueError with a short reason; the settings layer names the variable.
    """
    specs: dict[str, TransformSpec] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        name, sep, text = (s.strip() for s in part.partition("="))
        if not sep or not name or not text:
            raise ValueError(f"{part!r} is not SINK=TRANSFORM (e.g. cloudflare-images=fit)")
        if name in specs:
            raise ValueError(f"{name} is given twice")
        try:
            specs[name] = parse_spec(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return specs


def parse_spec(text: str) -> TransformSpec:
    head, colon, rest = (s.strip() for s in text.partition(":"))
    mode = _ALIASES.get(head.lower(), head.lower())
    if mode not in ("none", "fit", *PROFILES):
        raise ValueError(f"unknown transform {head!r} (known: none, off, fit, {', '.join(PROFILES)})")
    if mode == "avif" and not features.check("avif"):
        raise ValueError("this Pillow build cannot write AVIF")
    if mode == "none":
        if colon:
            raise ValueError(f"{head} takes no options")
        return NONE
    spec = TransformSpec(mode)
    seen: set[str] = set()
    for opt in rest.split(",") if colon else []:
        key, eq, value = (s.strip() for s in opt.partition("="))
        if key in seen:
            raise ValueError(f"{key}= is given twice")
        seen.add(key)
        if key == "q" and eq and value.isdigit() and 1 <= int(value) <= 100:
            if mode == "png":
                raise ValueError("png is lossless: q= does not apply")
            spec = replace(spec, quality=int(value))
        elif key == "max" and eq and value.isdigit() and int(value) >= 16:
            spec = replace(spec, max_side=int(value))
        elif key == "exif" and value in tuple(ExifPolicy):
            spec = replace(spec, exif=ExifPolicy(value))
        elif key in ("q", "max", "exif"):
            expected = {"q": "1 to 100", "max": "pixels, at least 16", "exif": "keep, strip or strip-gps"}[key]
            raise ValueError(f"{key}={value!r}: expected {expected}")
        else:
            raise ValueError(f"unknown option {opt!r} (known: q=, max=, exif=)")
    return spec


TRANSFORMS_SETTING = register((
    Setting("FILESYNC_TRANSFORMS", "Image transforms per destination, `sink=spec;...`: fit (the default for "
            "cloudflare-images: oversized photos are resized to its limits instead of failing), none, jpeg, png, "
            "webp, avif, with options q=N, max=PX, exif=keep|strip|strip-gps (default strip-gps), e.g. "
            "`bunny=webp:q=80,max=2560`. Videos are never transformed.", default="", parse=parse_transforms,
            group="Images"),
))[0]


def spec_for(sink_name: str, specs: dict[str, TransformSpec]) -> TransformSpec:
    """The effective spec: the setting's, else the sink's default (`fit` for cloudflare-images), else none."""
    return specs.get(sink_name, DEFAULTS.get(sink_name, NONE))
