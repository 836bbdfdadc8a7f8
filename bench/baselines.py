"""The two baselines every throughput figure is compared with, run as a child process of their own:

- raw: the limit of this machine and these servers. A loop at the same concurrency that only downloads
  each object and uploads it: no database, no retries, no logging, no inspection. Bytes stream where the
  destination allows (tus chunks, S3 parts), as filesync's do.
- sequential: the design most existing tools use. One file at a time, the whole file read into memory,
  then uploaded.

`python -m bench.baselines '<json spec>'` prints one JSON line: files, bytes, seconds. The spec names the
mode, the target (images: the Images batch host; stream: tus to Stream on the account API; s3: an S3
bucket), the source bucket and keys, and where to send.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import requests
from botocore.config import Config

MiB = 1024 * 1024
S3_PART = 8 * MiB  # filesync's S3 sink part size


class Loop:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        pool = max(10, int(spec.get("concurrency", 1)) * 2)
        self.s3 = boto3.client("s3", endpoint_url=spec["endpoint"], region_name=spec.get("region", "nyc3"),
                               aws_access_key_id="bench-key", aws_secret_access_key="bench-secret",
                               config=Config(max_pool_connections=pool))
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool))
        self.api = f"{spec.get('api_base', '')}/accounts/{spec.get('account_id', '')}"
        self.auth = {"Authorization": f"Bearer {spec.get('token', '')}"}
        self._local = threading.local()

    def batch_auth(self) -> dict[str, str]:
        """A batch token per thread: the raw loop is the machine's limit, not Cloudflare's 200/s per token."""
        if not hasattr(self._local, "auth"):
            answer = self.http.get(f"{self.api}/images/v1/batch_token", headers=self.auth)
            self._local.auth = {"Authorization": f"Bearer {answer.json()['result']['token']}"}
        auth: dict[str, str] = self._local.auth
        return auth

    def get(self, key: str) -> Any:
        return self.s3.get_object(Bucket=self.spec["bucket"], Key=key)

    # --- one file, each way ---------------------------------------------------------------------
    def copy(self, key: str, whole: bool) -> int:
        target = self.spec["target"]
        body = self.get(key)
        size = int(body["ContentLength"])
        stream = body["Body"]
        if whole:
            data = stream.read()
            stream = _Bytes(data)
        if target == "images":
            data = stream.read()
            answer = self.http.post(f"{self.spec['batch_base']}/images/v1", headers=self.batch_auth(),
                                    data={"id": key}, files={"file": (key, data, "image/jpeg")})
            answer.raise_for_status()
        elif target == "stream":
            self._tus(key, size, stream)
        else:
            self._s3(key, size, stream, whole)
        return size

    def _tus(self, key: str, size: int, stream: Any) -> None:
        chunk = int(self.spec.get("chunk", 50 * MiB))
        created = self.http.post(f"{self.api}/stream", headers={**self.auth, "Tus-Resumable": "1.0.0",
                                                                "Upload-Length": str(size)})
        created.raise_for_status()
        url = requests.compat.urljoin(f"{self.api}/stream", created.headers["Location"])
        offset = 0
        while offset < size:
            data = stream.read(min(chunk, size - offset))
            answer = self.http.patch(url, data=data, headers={
                **self.auth, "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream"})
            answer.raise_for_status()
            offset += len(data)

    def _s3(self, key: str, size: int, stream: Any, whole: bool) -> None:
        bucket = self.spec["dest_bucket"]
        if whole:
            self.s3.put_object(Bucket=bucket, Key=key, Body=stream.read())
            return
        upload = self.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts: list[Any] = []
        number, left = 1, size
        while left > 0:
            data = stream.read(min(S3_PART, left))
            etag = self.s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data)["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})
            number, left = number + 1, left - len(data)
        self.s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})

    def run(self) -> dict[str, Any]:
        keys: list[str] = self.spec["keys"]
        sequential = self.spec["mode"] == "sequential"
        started = time.monotonic()
        if sequential:
            total = sum(self.copy(key, whole=True) for key in keys)
        else:
            with ThreadPoolExecutor(int(self.spec.get("concurrency", 1))) as pool:
                total = sum(pool.map(lambda k: self.copy(k, whole=False), keys))
        return {"files": len(keys), "bytes": total, "seconds": time.monotonic() - started}


class _Bytes:
    """A file already read whole, handed on in pieces."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        piece, self.at = self.data[self.at:end], min(end, len(self.data))
        return piece


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    print(json.dumps(Loop(spec).run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
