"""Bench media, made and put into S3 without holding more than one part in memory."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.harness import Bucket, MiB


def noise_jpeg(target_bytes: int) -> bytes:
    """A JPEG of random pixels, about `target_bytes` long; every call gives a different image."""
    from PIL import Image

    side = max(16, int((target_bytes * 1.1) ** 0.5))  # random RGB, quality 90: about 0.9 byte per pixel
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def put_images(bucket: Bucket, count: int, target_bytes: int, prefix: str = "img") -> tuple[list[str], int]:
    """`count` distinct JPEGs as <prefix>/<n>.jpg; returns their keys and total bytes."""
    client = bucket.client()

    def put(n: int) -> int:
        data = noise_jpeg(target_bytes)
        client.put_object(Bucket=bucket.name, Key=f"{prefix}/{n:06d}.jpg", Body=data, ContentType="image/jpeg")
        return len(data)

    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(put, range(count)))
    return [f"{prefix}/{n:06d}.jpg" for n in range(count)], sum(sizes)


def mp4_parts(size: int, part_size: int) -> Iterator[bytes]:
    """An MP4 container (ftyp + mdat) of exactly `size` bytes of random payload, yielded part by part."""
    brand = b"isom"
    ftyp_body = brand + struct.pack(">I", 512) + brand + b"mp41"
    header = struct.pack(">I", 8 + len(ftyp_body)) + b"ftyp" + ftyp_body
    payload = size - len(header) - 16
    if payload < 0:
        raise ValueError("video too small")
    header += struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + payload)  # 64-bit box size: any length
    first = True
    left = size
    while left > 0:
        n = min(part_size, left)
        if first:
            yield header + os.urandom(n - len(header))
            first = False
        else:
            yield os.urandom(n)
        left -= n


def put_video(bucket: Bucket, key: str, size: int, part_size: int = 16 * MiB) -> None:
    """A multipart upload: one part in memory at a time, in the bench process as in filesync."""
    client: Any = bucket.client()
    upload = client.create_multipart_upload(Bucket=bucket.name, Key=key, ContentType="video/mp4")
    parts = []
    for number, data in enumerate(mp4_parts(size, part_size), start=1):
        etag = client.upload_part(Bucket=bucket.name, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                  Body=data)["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    client.complete_multipart_upload(Bucket=bucket.name, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
