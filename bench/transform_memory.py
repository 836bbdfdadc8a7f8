"""Benchmark 6: peak memory of fitting a 100-megapixel JPEG for Cloudflare Images, several at once.

`python -m bench --only transforms` (20 MP with --quick), or by hand with `python bench/transform_memory.py
[--megapixels 100] [--threads 4] [--markdown]`; not in CI. Each case is a child process of its own (`--child`): it
imports filesync, reads its VmHWM from /proc/self/status (the floor: interpreter, Pillow, pillow-heif, the sink
registry), fits the same JPEG in N threads at once through `plan()` and `apply()` with Cloudflare Images' declared
limits, and reads its VmHWM again. The kernel's high-water mark only grows, so the second reading is the peak of the
whole case.

The JPEG is 12,500 px wide (over the 12,000 px limit), so libjpeg cannot reduce while decoding: each transform holds
the decoded source (4 bytes a pixel in Pillow) and the resized copy. A smaller `--megapixels` (quicker) is shrunk by
the same 4 % with `fit:max=`. Cases: the default `DecodeBudget` (shared by the threads), no budget at all, and one
thread for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/transform_memory.py` from anywhere

from bench.report import Table, markdown, mib, text

ASPECT = 12_500 / 8_000


def vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def make_jpeg(megapixels: int) -> Path:
    """A photo-like JPEG (smooth noise over gradients), made once and kept in the temporary folder."""
    from PIL import Image

    width = round(math.sqrt(megapixels * 1e6 * ASPECT))
    height = round(megapixels * 1e6 / width)
    path = Path(tempfile.gettempdir()) / f"filesync-bench-{width}x{height}.jpg"
    if path.exists():
        return path
    print(f"  making a {width}x{height} JPEG ({width * height / 1e6:.0f} MP) ...", flush=True)
    Image.MAX_IMAGE_PIXELS = None
    small = (width // 8, height // 8)
    channels = [Image.effect_noise(small, 60).resize((width, height), Image.Resampling.BICUBIC),
                Image.linear_gradient("L").resize((width, height)),
                Image.effect_noise(small, 30).resize((width, height), Image.Resampling.BILINEAR)]
    Image.merge("RGB", channels).save(path.with_suffix(".tmp"), "JPEG", quality=92)
    path.with_suffix(".tmp").rename(path)
    return path


def child(path: Path, threads: int, budget_name: str) -> dict[str, object]:
    from PIL import Image

    from filesync import sinks
    from filesync.transforms import DEFAULT_BUDGET, TransformSpec, apply, plan

    caps = sinks.load("cloudflare-images").capabilities
    size = path.stat().st_size
    with Image.open(path) as im:
        width, height = im.size
    floor = vm_hwm()
    # Cloudflare Images' default (`fit`); a smaller --megapixels is made to shrink by as little (4 %) with max=.
    spec = TransformSpec("fit", max_side=round(width * 0.96)) if width * 0.96 < (caps.max_dimension or 0) else None
    todo = plan(spec or TransformSpec("fit"), "image/jpeg", size, width, height, caps)
    if todo is None:
        raise RuntimeError("the JPEG is within Cloudflare Images' limits: nothing to measure")
    budget = DEFAULT_BUDGET if budget_name == "default" else None

    def one(_: int) -> str:
        with path.open("rb") as f, apply(todo, f, size, budget=budget) as derived:
            if derived.size != len(derived.body.read()) or derived.size > (caps.max_bytes or 0):
                raise RuntimeError(f"not within limits: {derived.description}, {derived.size} bytes")
            return f"{derived.description}, {derived.size / 1e6:.1f} MB"

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(threads)))
    return {"floor": floor, "peak": vm_hwm(), "seconds": time.monotonic() - started, "result": results[0],
            "source": f"{width}x{height}, {size / 1e6:.1f} MB"}


def run_case(path: Path, threads: int, budget_name: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), "--threads", str(threads),
                           "--budget", budget_name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(megapixels: int = 100, threads: int = 4) -> Table:
    """The scenario `python -m bench` runs: peak memory fitting one JPEG, alone and `threads` at once."""
    from filesync.transforms import DECODE_BUDGET_BYTES

    path = make_jpeg(megapixels)
    table = Table(f"6. Transform memory: a {megapixels} MP JPEG fitted for Cloudflare Images",
                  ["threads", "decode budget", "peak RSS MiB", "over floor MiB", "s"])
    source = result = ""
    for n, budget in ((1, "default"), (threads, "default"), (threads, "none")):
        r = run_case(path, n, budget)
        peak, floor = int(r["peak"]), int(r["floor"])  # type: ignore[call-overload]
        label = f"{DECODE_BUDGET_BYTES / 2**30:.0f} GiB" if budget == "default" else "none"
        table.add(n, label, mib(peak), f"+{mib(peak - floor)}", f"{float(r['seconds']):.1f}")  # type: ignore[arg-type]
        source, result = str(r["source"]), str(r["result"])
    table.notes.append(f"source {source}; each transform: {result}.")
    table.notes.append("peak RSS: VmHWM of the child process; floor: its VmHWM after imports, before the first "
                       "transform. s: wall time of the transforms (all threads).")
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megapixels", type=int, default=100, help="size of the JPEG (default 100)")
    p.add_argument("--threads", type=int, default=4, help="transforms at once (default 4)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--budget", default="default", choices=("default", "none"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.budget)))
        return 0

    table = run(args.megapixels, args.threads)
    print()
    print(markdown(table) if args.markdown else text(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
