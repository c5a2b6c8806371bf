"""Memory of the model worker against batch size, under onnxruntime's memory settings.

    python -m loadtests.memory --out reports/memory            # batches 1..64 (~4 min)
    python -m loadtests.memory --out runs/memory --batches 1,8 --seconds 0.5

Configurations (`--configs`), each the service's own backend (`runtime.backends.onnxruntime`)
with these `SLOTSERVE_ORT_MEMORY_*` settings:

    service     arena on, memory pattern off  (the service's defaults)
    ort         arena on, memory pattern on   (onnxruntime's defaults)
    no-arena    arena off, memory pattern off
    service-x2  the service's defaults with two model instances (`SLOTSERVE_MODEL_INSTANCES=2`,
                the default): two sessions of half the threads, each running a call of that
                batch at the same time, as a worker under full load does

Each point (batch size x configuration) runs in a fresh process that loads the bundle, runs
that batch for a few seconds and reports its resident memory after loading, after the calls,
its high-water mark, and the time per call; a fresh process keeps one point's arena out of
the next. The points run interleaved (every configuration, batch by batch) so machine noise
falls on all alike. The arena keeps the activations of the largest batch run so far, so a
worker's memory follows the largest batch it has been given (`SLOTSERVE_MAX_BATCH_SIZE`
bounds it).

The points run under glibc's default allocator settings, as in the bento's container:
`make` exports MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (training/runtime.py: freed
memory stays in the process, for training speed), under which turning the arena off frees
nothing back to the system. `--keep-malloc-env` measures under the caller's settings instead.

Writes memory.json (everything), memory.md (table and per-image slopes) and memory.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from loadtests.measure import BUNDLE, cpu_name, log, percentile, time_calls

DEFAULT_BATCHES = (1, 4, 8, 16, 32, 64)
CONFIGS = {
    "service": {"memory_arena": True, "memory_pattern": False},
    "ort": {"memory_arena": True, "memory_pattern": True},
    "no-arena": {"memory_arena": False, "memory_pattern": False},
    "service-x2": {"memory_arena": True, "memory_pattern": False, "instances": 2},
}
REFERENCE = "service"
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(bundle: Path, batch: int, config: str, threads: int, seconds: float) -> dict:
    """One point, in this process: load, run `batch` images for `seconds`, report memory.
    The images are random: the graph's work and memory do not depend on what they show, and
    no torch (for the shapes generator) is imported to blur the figures."""
    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.contract import MODEL_FILE, load_bundle

    manifest = load_bundle(bundle)
    shape = (batch, manifest.input.channels, manifest.input.height, manifest.input.width)
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    settings = dict(CONFIGS[config])
    instances = settings.pop("instances", 1)
    before = rss_mb()
    backends = [
        OnnxRuntimeBackend(
            bundle / MODEL_FILE, manifest, "fp32", "cpu", max(1, threads // instances), **settings
        )
        for _ in range(instances)
    ]
    loaded = rss_mb()
    if instances == 1:
        run = backends[0].infer
    else:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(instances)

        def run(x: np.ndarray) -> None:  # one call per instance at once (onnxruntime frees the GIL)
            for future in [pool.submit(b.infer, x) for b in backends]:
                future.result()

    times = time_calls(run, images, seconds, min_calls=3)
    mean = statistics.fmean(times)
    return {
        "batch": batch,
        "config": config,
        **CONFIGS[config],
        "instances": instances,
        "rss_mb_before_load": before,
        "rss_mb_loaded": loaded,
        "rss_mb_after": rss_mb(),
        "rss_mb_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "calls": len(times),
        "ms_per_call_p50": 1e3 * percentile(times, 50),
        "images_per_s": instances * batch / mean,
    }


def run_point(
    bundle: Path, batch: int, config: str, threads: int, seconds: float, env: dict[str, str]
) -> dict:
    """`measure` in a fresh interpreter (so the arena of one point is not in the next)."""
    cmd = [
        sys.executable, "-m", "loadtests.memory", "--child", "--bundle", str(bundle),
        "--batches", str(batch), "--configs", config,
        "--threads", str(threads), "--seconds", str(seconds),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"batch {batch}, {config}: {tail}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summary(points: list[dict]) -> dict:
    """Activation memory per image of batch (least-squares slope of memory after the calls,
    less memory after loading, over batch size) for each configuration, and each
    configuration's memory and time per call over the service defaults' at each batch."""
    out: dict = {"mb_per_image": {}, "by_batch": []}
    configs = list(dict.fromkeys(p["config"] for p in points))
    for name in configs:
        rows = [p for p in points if p["config"] == name]
        if len({p["batch"] for p in rows}) >= 2:
            x = np.array([p["batch"] for p in rows], float)
            y = np.array([p["rss_mb_after"] - p["rss_mb_loaded"] for p in rows], float)
            out["mb_per_image"][name] = float(np.polyfit(x, y, 1)[0])
    for b in sorted({p["batch"] for p in points}):
        at = {p["config"]: p for p in points if p["batch"] == b}
        row: dict = {"batch": b, "rss_mb": {c: p["rss_mb_after"] for c, p in at.items()}}
        row["ms_per_call"] = {c: p["ms_per_call_p50"] for c, p in at.items()}
        ref = at.get(REFERENCE)
        if ref:
            row["memory_over_service"] = {
                c: p["rss_mb_after"] / ref["rss_mb_after"] for c, p in at.items() if c != REFERENCE
            }
            row["time_over_service"] = {
                c: p["ms_per_call_p50"] / ref["ms_per_call_p50"]
                for c, p in at.items()
                if c != REFERENCE
            }
        out["by_batch"].append(row)
    return out


def write_markdown(path: Path, result: dict) -> None:
    s = result["summary"]
    lines = [
        "# Model-worker memory against batch size",
        "",
        f"{result['started']}, {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"onnxruntime {result['machine']['onnxruntime']}, {result['threads']} threads, bundle "
        f"`{result['bundle']}` (fp32). Each point a fresh process; resident memory after "
        "loading and after running that batch for a few seconds. glibc allocator settings: "
        + (
            ", ".join(f"{k}={v}" for k, v in result["machine"]["malloc_env"].items() if v)
            or "its defaults"
        )
        + ".",
        "",
    ]
    configs = list(dict.fromkeys(p["config"] for p in result["points"]))
    if any(CONFIGS[c].get("instances", 1) > 1 for c in configs):
        lines[-1:-1] = [
            "A configuration of several instances runs one call of that batch on each at the "
            "same time (a worker under full load); its time per call is theirs together.",
        ]
    head = ["batch"] + [f"{c}: MB, ms per call" for c in configs]
    head += [f"{c} / {REFERENCE}: memory, time" for c in configs if c != REFERENCE]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in s["by_batch"]:
        cells = [str(r["batch"])]
        cells += [
            f"{r['rss_mb'][c]:.0f}, {r['ms_per_call'][c]:.1f}" if c in r["rss_mb"] else ""
            for c in configs
        ]
        cells += [
            f"{r['memory_over_service'][c]:.2f}, {r['time_over_service'][c]:.2f}"
            if c in r.get("memory_over_service", {})
            else ""
            for c in configs
            if c != REFERENCE
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Activation memory per image of batch (slope of memory after the calls):"]
    for name, slope in s["mb_per_image"].items():
        flags = ", ".join(
            f"{k.replace('_', ' ')} {'on' if v else 'off'}" if isinstance(v, bool) else f"{k} {v}"
            for k, v in CONFIGS[name].items()
        )
        lines.append(f"- {name} ({flags}): {slope:.1f} MB")
    path.write_text("\n".join(lines) + "\n")


def plot(out: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(p["config"] for p in result["points"]):
        rows = [p for p in result["points"] if p["config"] == name]
        batches = [p["batch"] for p in rows]
        axes[0].plot(batches, [p["rss_mb_after"] for p in rows], "o-", label=name)
        axes[1].plot(batches, [p["images_per_s"] for p in rows], "o-", label=name)
    axes[0].set(xlabel="batch size", ylabel="resident memory after the calls (MB)")
    axes[1].set(xscale="log", xlabel="batch size", ylabel="images / s")
    batches = sorted({p["batch"] for p in result["points"]})
    axes[1].set_xticks(batches, [str(b) for b in batches])
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Model worker (onnxruntime, fp32): memory and speed against batch size")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.memory", description=__doc__)
    parser.add_argument("--out", type=Path, help="directory for memory.json / .md / .png")
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument(
        "--batches",
        default=",".join(map(str, DEFAULT_BATCHES)),
        help="batch sizes, comma-separated (default 1,4,8,16,32,64)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, of: {', '.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=3.0, help="per point")
    parser.add_argument(
        "--keep-malloc-env",
        action="store_true",
        help="keep this shell's MALLOC_* settings (default: glibc's, as in a container)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
    except ValueError:
        parser.error(f"--batches: not a list of integers: {args.batches!r}")
    if not batches or batches[0] < 1:
        parser.error(f"--batches: sizes must be >= 1: {args.batches!r}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        parser.error(f"--configs: unknown {unknown or args.configs!r}; choose from {list(CONFIGS)}")
    if args.child:
        print(json.dumps(measure(args.bundle, batches[0], configs[0], args.threads, args.seconds)))
        return 0
    if args.out is None:
        parser.error("--out is required")
    import onnxruntime

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    env = dict(os.environ)
    if not args.keep_malloc_env:
        for name in MALLOC_VARS:
            env.pop(name, None)
    points = []
    total = len(batches) * len(configs)
    for b in batches:
        for config in configs:
            point = run_point(args.bundle, b, config, args.threads, args.seconds, env)
            points.append(point)
            log(
                f"[{len(points)}/{total}] batch {b}, {config}: "
                f"{point['rss_mb_loaded']:.0f} MB loaded, {point['rss_mb_after']:.0f} MB after, "
                f"{point['ms_per_call_p50']:.1f} ms per call"
            )
    result = {
        "started": started,
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__,
            "malloc_env": {name: env.get(name) for name in MALLOC_VARS},
        },
        "bundle": args.bundle.name,
        "threads": args.threads,
        "seconds_per_point": args.seconds,
        "points": points,
        "summary": summary(points),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "memory.md", result)
    plot(args.out, result)
    log(f"wrote {args.out}/memory.json, memory.md, memory.png")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
