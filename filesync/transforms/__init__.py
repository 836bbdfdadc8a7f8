"""Fit, convert and compress an image on its way to one destination, with bounded memory.

Three steps, one module each:

* `spec`: `parse_transforms` reads FILESYNC_TRANSFORMS once at start
  (``cloudflare-images=fit;bunny=webp:q=80,max=2560``); `spec_for` gives a sink its effective spec: Cloudflare
  Images fits by default, every other sink sends originals.
* `plans`: `plan` decides from what the pipeline already knows (MIME type, size, header dimensions) whether the
  original can go as it is. It decodes nothing; most files stop here and reach the destination byte for byte.
* `images`: `apply` decodes once, downscales to the largest size within the limits, makes it upright, and
  re-encodes into a temporary file, lowering the quality step by step (then the size) until the byte limit is
  met. A file that cannot be made to fit raises `TransformError`, which the pipeline parks with its reason.

Choices:
* Memory: large JPEGs are reduced while decoding (`draft`); the decoded source is freed once resized; all
  transforms of the process share a `DecodeBudget`, so N transfer slots never hold N huge images at once.
  Headers over `MAX_PIXELS` are refused before decoding (Pillow's own guard is raised to the same limit).
* Formats: the source format is kept where the destination takes it and we can write it (JPEG, PNG, GIF, WebP,
  AVIF). HEIC/HEIF become JPEG (PNG when they have alpha); TIFF and BMP become PNG. A PNG too big for the byte
  limit becomes JPEG only when it has no alpha; with alpha it is downscaled instead. Profiles do not apply to
  GIFs (their frames are only fitted). Animated images keep every frame (GIF, APNG, WebP): resizing one holds
  its resized frames at once, which the frame count times the area must keep under `MAX_PIXELS`.
* Metadata: EXIF is kept, stripped, or kept without GPS (the default) on what we derive; orientation is applied
  and reset to 1; XMP is dropped (it can carry GPS); the ICC colour profile is kept. Originals sent as they are
  keep all of their bytes.
"""

from __future__ import annotations

from filesync.transforms.images import DECODE_BUDGET_BYTES, DEFAULT_BUDGET, DecodeBudget, Derived, ImageFacts, apply
from filesync.transforms.plans import MAX_PIXELS, Plan, TransformError, plan
from filesync.transforms.spec import (
    DEFAULTS,
    FIT,
    NONE,
    TRANSFORMS_SETTING,
    ExifPolicy,
    TransformSpec,
    parse_spec,
    parse_transforms,
    spec_for,
)

__all__ = [
    "DECODE_BUDGET_BYTES",
    "DEFAULTS",
    "DEFAULT_BUDGET",
    "FIT",
    "MAX_PIXELS",
    "NONE",
    "TRANSFORMS_SETTING",
    "DecodeBudget",
    "Derived",
    "ExifPolicy",
    "ImageFacts",
    "Plan",
    "TransformError",
    "TransformSpec",
    "apply",
    "parse_spec",
    "parse_transforms",
    "plan",
    "spec_for",
]
