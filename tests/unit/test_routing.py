from __future__ import annotations

import pytest

from filesync.errors import ConfigError
from filesync.routing import Routes
from filesync.settings import DEFAULT_ROUTES


def test_default_routes_send_images_and_videos_to_cloudflare() -> None:
    routes = Routes.parse(DEFAULT_ROUTES)
    assert routes.sinks_for("image/jpeg") == ["cloudflare-images"]
    assert routes.sinks_for("video/quicktime") == ["cloudflare-stream"]
    assert routes.sinks_for("application/pdf") == []


def test_first_matching_pattern_wins_and_kinds_are_shorthand() -> None:
    routes = Routes.parse("image/heic=bunny; image=cloudflare-images,bunny ;*=s3")
    assert routes.sinks_for("image/heic") == ["bunny"]
    assert routes.sinks_for("IMAGE/PNG") == ["cloudflare-images", "bunny"]
    assert routes.sinks_for("application/pdf") == ["s3"]
    assert routes.all_sinks() == ["bunny", "cloudflare-images", "s3"]


@pytest.mark.parametrize("text", ["", "image/*", "image/*=", "=bunny", "image/*=a,a", "image/*=Bad Name"])
def test_malformed_routes_name_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="FILESYNC_ROUTES"):
        Routes.parse(text)
