"""The shipped bundles side by side, served: images/s, latency and memory on real photographs.

    python -m loadtests.bundles --out reports/bundles            # ~4 min on 2 cores

In one run, `bentoml serve` is started once per bundle (`SLOTSERVE_BUNDLE`) and per
`--instances` value (`SLOTSERVE_MODEL_INSTANCES`, default the service's 2; every other setting
the service's default), and closed-loop HTTP users (`--users`, default 1 and 4) post
scikit-image's sample photographs (`coffee`, `astronaut`, `chelsea`, `rocket`, JPEG at their
own size) to /decompose for `--seconds` each. Per bundle and user count: answered images/s,
p50 / p99 latency, shed requests and errors, and the worker's resident memory at the end of
the point (the model's memory follows the largest batch it ran). The bundles take the same
images in the same order, so the ratios compare the models, not the load. Writes
bundles.json and bundles.md in `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from loadtests import clients
from loadtests.measure import log, machine, percentile
from loadtests.server import REPO, Server, serve

BUNDLES = {
    "shapes": REPO / "models" / "slotserve-shapes",
    "photos": REPO / "models" / "slotserve-photos",
}
PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")


def photographs() -> list[bytes]:
    """scikit-image's sample photographs as JPEG (quality 90), at their own sizes."""
    from PIL import Image
    from skimage import data

    out = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).convert("RGB").save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def point(server: Server, instances: int, users: int, seconds: float, images: list[bytes]) -> dict:
    r = asyncio.run(clients.closed_loop(server, "http", users, seconds, images))
    ms = [1e3 * t for t in r.latencies]
    return {
        "instances": instances,
        "users": users,
        "images_per_s": round(r.goodput, 2),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "answered": r.answered,
        "shed": r.shed,
        "errors": r.errors,
        "memory_mb": round(server.rss_bytes() / 1e6, 0),
    }


def write_markdown(path: Path, result: dict) -> None:
    lines = [
        "# The shipped bundles, served",
        "",
        f"Run {result['started']} on {result['machine']['cpu']} "
        f"({result['machine']['cores']} cores), `python -m loadtests.bundles`: closed-loop HTTP "
        f"users posting scikit-image's {', '.join(PHOTOS)} (JPEG, their own sizes) to "
        f"/decompose, {result['seconds']:.0f} s per point, the service's default settings but "
        "the model instances (`SLOTSERVE_MODEL_INSTANCES`) as listed.",
        "",
        "| bundle | instances | users | images/s | p50 ms | p99 ms | shed | errors | memory MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["bundles"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['instances']} | {r['users']} | {r['images_per_s']:.1f} | "
                f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['shed']} | {r['errors']} | "
                f"{r['memory_mb']:.0f} |"
            )
    if {"shapes", "photos"} <= set(result["bundles"]):
        lines.append("")
        for a, b in zip(result["bundles"]["photos"], result["bundles"]["shapes"], strict=True):
            speed = a["images_per_s"] / b["images_per_s"]
            lines.append(
                f"- {a['instances']} instance(s), {a['users']} user(s): photos / shapes images/s "
                f"{speed:.2f}x, p99 {a['p99_ms'] / b['p99_ms']:.2f}x"
            )
    path.write_text("\n".join(lines) + "\n")


def number_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bundles", description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--users", type=number_list, default=[1, 4])
    p.add_argument("--instances", type=number_list, default=[2], help="SLOTSERVE_MODEL_INSTANCES")
    p.add_argument("--bundles", default=",".join(BUNDLES), help="shapes,photos")
    args = p.parse_args(argv)
    names = args.bundles.split(",")
    unknown = [n for n in names if n not in BUNDLES]
    if unknown or args.seconds <= 0 or min(args.users) < 1 or min(args.instances) < 1:
        p.error(
            f"--bundles among {sorted(BUNDLES)}, --seconds > 0, --users and --instances >= 1 "
            f"(unknown bundles: {unknown})"
        )
    images = photographs()
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "seconds": args.seconds,
        "bundles": {},
    }
    for name in names:
        rows = result["bundles"][name] = []
        for instances in args.instances:
            env = {
                "SLOTSERVE_BUNDLE": str(BUNDLES[name]),
                "SLOTSERVE_MODEL_INSTANCES": str(instances),
            }
            with (
                tempfile.TemporaryDirectory() as root,
                serve(Path(root), env, timeout=300) as server,
            ):
                asyncio.run(clients.closed_loop(server, "http", 1, 3.0, images))  # warm-up
                for users in args.users:
                    rows.append(point(server, instances, users, args.seconds, images))
                    log(f"{name} {instances} instance(s) x{users}: {rows[-1]}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bundles.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "bundles.md", result)
    log(f"wrote {args.out}/bundles.json and bundles.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
