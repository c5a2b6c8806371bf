"""Benchmark: the raw model and the served model, measured in ONE run so ratios hold.

    python -m loadtests.bench --out reports/bench            # full run (~10 min on 2 cores)
    python -m loadtests.bench --out runs/bench-quick --quick # smoke run (~1 min)
    python -m loadtests.bench --out reports/bench-cuda --provider cuda --batches 1,16,64,256

Raw model: torch eager (from the checkpoint) and onnxruntime fp32 / fp16 / int8 (from the
bundle) on the chosen provider (`--provider cuda`: torch on the GPU and onnxruntime's CUDA
execution provider, refused if onnxruntime would quietly fall back to the CPU), images/s and
latency per call (host arrays in and out, as the service calls it) at each batch. Served: `bentoml
serve` started here with the same SLOTSERVE_PROVIDER, HTTP and gRPC closed-loop clients at
concurrency 1, 4, 16, 64: throughput, p50/p95/p99, images per model call (from the service's own
metric), shed requests. Also the model's FLOPs per image and, on the CPU, the FLOP rate achieved
against this CPU's fp32 peak (a measured SGEMM, and the nominal AVX2-FMA figure where the clock
is known).

Writes bench.json (everything), bench.md (tables + headline ratios) and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from loadtests import clients
from loadtests.measure import (
    BUNDLE,
    CHECKPOINT,
    encoded,
    log,
    machine,
    percentile,
    scenes,
    time_calls,
)
from loadtests.server import Server, serve
from runtime.backends import BackendError, check_provider
from service.settings import Settings

RAW_BATCHES = (1, 4, 16, 64)
PROVIDERS = ("cpu", "cuda")
CONCURRENCIES = (1, 4, 16, 64)


# -- raw model ----------------------------------------------------------------------------------
def batch_list(text: str) -> tuple[int, ...]:
    """`--batches 1,16,64` -> (1, 16, 64); batch 1 and 16 feed the headline."""
    try:
        batches = tuple(sorted({int(b) for b in text.split(",") if b.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not batches or batches[0] < 1 or not {1, 16} <= set(batches):
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1 and include 1 and 16: {text!r}")
    return batches


def instances_name(instances: int) -> str:
    """The raw row of the service's own arrangement: `ort-fp32` for one instance,
    `ort-fp32-x2` for two model calls at once (`SLOTSERVE_MODEL_INSTANCES`)."""
    return "ort-fp32" if instances == 1 else f"ort-fp32-x{instances}"


def raw_runners(threads: int, provider: str = "cpu", instances: int = 1) -> dict:
    """Torch eager and each onnxruntime variant on `threads` threads, one call at a time;
    on the CPU with `instances` > 1 also `ort-fp32-xN`: the service's arrangement, N calls at
    once, each on its own session of `threads // N` threads, the batch split among them."""
    import torch

    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.contract import VARIANT_FILES, load_bundle, to_model_input
    from training.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    device = torch.device("cuda" if provider == "cuda" else "cpu")
    model, _ = load_checkpoint(CHECKPOINT)
    model.to(device)
    manifest = load_bundle(BUNDLE)

    def torch_eager(images):
        with torch.inference_mode():
            out = model(torch.from_numpy(to_model_input(images, manifest.input)).to(device))
            out.masks.cpu()  # host arrays out, as onnxruntime returns them (and a sync)

    runners = {"torch-eager": torch_eager}
    for variant, name in VARIANT_FILES.items():
        if name not in manifest.files and variant != "fp32":
            continue
        # the service's own backend: same provider options (TF32 off on CUDA), and an error
        # where onnxruntime would quietly fall back to the CPU
        backend = OnnxRuntimeBackend(BUNDLE / name, manifest, variant, provider, threads)

        def run(images, backend=backend):
            backend.infer(to_model_input(images, manifest.input))

        runners[f"ort-{variant}"] = run
    if instances > 1 and provider == "cpu":
        from concurrent.futures import ThreadPoolExecutor

        # as the service: one session per instance, threads // instances threads each
        sessions = [
            OnnxRuntimeBackend(
                BUNDLE / VARIANT_FILES["fp32"],
                manifest,
                "fp32",
                "cpu",
                max(1, threads // instances),
            )
            for _ in range(instances)
        ]
        pool = ThreadPoolExecutor(instances, thread_name_prefix="instance")

        def run_instances(images):
            parts = np.array_split(images, instances)
            calls = [
                pool.submit(b.infer, to_model_input(p, manifest.input))
                for b, p in zip(sessions, parts, strict=True)
                if len(p)
            ]
            for call in calls:
                call.result()

        runners[instances_name(instances)] = run_instances
    return runners


def raw_benchmarks(runners: dict, batches, min_seconds: float) -> list[dict]:
    images = scenes(max(batches))
    rows = []
    for name, fn in runners.items():
        for b in batches:
            times = time_calls(fn, images[:b], min_seconds)
            mean = statistics.fmean(times)
            rows.append(
                {
                    "backend": name,
                    "batch": b,
                    "calls": len(times),
                    "latency_ms_p50": 1e3 * percentile(times, 50),
                    "latency_ms_p95": 1e3 * percentile(times, 95),
                    "images_per_s": b / mean,
                }
            )
            p50 = rows[-1]["latency_ms_p50"]
            log(f"raw {name} batch {b}: {b / mean:.1f} img/s, p50 {p50:.2f} ms")
    return rows


def flops_per_image(cpu_shaped: bool = True) -> float:
    """Matmul and convolution FLOPs of one image through the shipped checkpoint; with
    `cpu_shaped=False`, through the decoder's reference path (the graph before its rework)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from training.checkpoint import load_checkpoint

    model, info = load_checkpoint(CHECKPOINT)
    model.decoder.cpu_shaped = cpu_shaped
    size = info.config.image_size
    counter = FlopCounterMode(display=False)
    with counter:  # (autograd on: the counter's module tracker hooks need grad_fns)
        model(torch.rand(4, 3, size, size))
    return counter.get_total_flops() / 4


def nominal_peak(threads: int, mhz: float | None, flags: str, sgemm: float) -> float | None:
    """Nominal fp32 GFLOP/s: threads x listed clock x FLOPs per cycle (32 with AVX2 FMA: two
    8-wide FMA units). None when the clock is unknown, or when the measured SGEMM beats it:
    then this CPU does more per cycle (AVX-512 on two full-width units) or runs above its
    listed clock, and a percentage of the figure would mislead."""
    per_cycle = 32 if " fma" in flags and " avx2" in flags else 16
    nominal = threads * mhz * 1e6 * per_cycle / 1e9 if mhz else None
    return nominal if nominal and sgemm <= nominal else None


def cpu_peak(threads: int) -> dict:
    """Measured SGEMM GFLOP/s (numpy's BLAS) and the nominal AVX2-FMA peak where it holds."""
    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        a @ a
    sgemm = 2 * n**3 * reps / (time.perf_counter() - t) / 1e9
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    clocks = [line for line in cpuinfo.splitlines() if line.lower().startswith("cpu mhz")]
    mhz = float(clocks[0].split(":")[1]) if clocks else None
    return {"sgemm_gflops": sgemm, "nominal_gflops": nominal_peak(threads, mhz, cpuinfo, sgemm)}


# -- served model --------------------------------------------------------------------------------
async def closed_loop(
    server: Server, protocol: str, users: int, seconds: float, images, retry="at-once"
):
    """`users` clients, each sending its next request as soon as the last one answers
    (`loadtests.clients`): answered latencies, refusals, errors, seconds."""
    r = await clients.closed_loop(server, protocol, users, seconds, images, retry)
    return r.latencies, r.shed, r.errors, r.elapsed


def served_benchmarks(
    server: Server, concurrencies, seconds: float, images, retry: str = "at-once"
) -> list[dict]:
    rows = []
    for protocol in ("http", "grpc"):
        asyncio.run(closed_loop(server, protocol, 2, 2.0, images))  # warm connections
        for users in concurrencies:
            calls0 = server.metric_value("slotserve_batch_images_count")
            imgs0 = server.metric_value("slotserve_batch_images_sum")
            lat, shed, errors, elapsed = asyncio.run(
                closed_loop(server, protocol, users, seconds, images, retry)
            )
            calls = server.metric_value("slotserve_batch_images_count") - calls0
            imgs = server.metric_value("slotserve_batch_images_sum") - imgs0
            rows.append(
                {
                    "protocol": protocol,
                    "concurrency": users,
                    "requests_ok": len(lat),
                    "images_per_s": len(lat) / elapsed,
                    "p50_ms": 1e3 * percentile(lat, 50),
                    "p95_ms": 1e3 * percentile(lat, 95),
                    "p99_ms": 1e3 * percentile(lat, 99),
                    "images_per_model_call": imgs / calls if calls else float("nan"),
                    "shed": shed,
                    "errors": errors,
                }
            )
            r = rows[-1]
            log(
                f"served {protocol} x{users}: {r['images_per_s']:.1f} img/s, p50 {r['p50_ms']:.1f}"
                f" ms, p99 {r['p99_ms']:.1f} ms, {r['images_per_model_call']:.2f} img/call, "
                f"shed {shed}, errors {errors}"
            )
    return rows


def headline_rounds(
    server: Server, rounds: int, seconds: float, fn, best_batch: int, users: int, bodies
) -> list[dict]:
    """The headline comparisons again, interleaved: each round measures raw onnxruntime
    (batch 1 and the best batch, in this process while the server idles) and then the served
    points it is compared with, so a drift of the machine's speed hits both sides of a ratio.
    The headline is the median round; the spread shows the noise."""
    images = scenes(max(best_batch, 1))
    out = []
    for k in range(rounds):
        one = time_calls(fn, images[:1], seconds)
        best = time_calls(fn, images[:best_batch], seconds)
        http1, _, _, _ = asyncio.run(closed_loop(server, "http", 1, seconds, bodies))
        grpc1, _, _, _ = asyncio.run(closed_loop(server, "grpc", 1, seconds, bodies))
        lat, _, errors, elapsed = asyncio.run(closed_loop(server, "http", users, seconds, bodies))
        row = {
            "raw_batch1_p50_ms": 1e3 * percentile(one, 50),
            "raw_best_images_per_s": best_batch / statistics.fmean(best),
            "http_p50_one_user_ms": 1e3 * percentile(http1, 50),
            "grpc_p50_one_user_ms": 1e3 * percentile(grpc1, 50),
            "http_saturation_images_per_s": len(lat) / elapsed,
            "errors": errors,
        }
        row["served_over_raw"] = row["http_saturation_images_per_s"] / row["raw_best_images_per_s"]
        row["http_overhead_ms"] = row["http_p50_one_user_ms"] - row["raw_batch1_p50_ms"]
        row["grpc_minus_http_ms"] = row["grpc_p50_one_user_ms"] - row["http_p50_one_user_ms"]
        out.append(row)
        log(
            f"round {k + 1}/{rounds}: served/raw {row['served_over_raw']:.3f}, HTTP overhead "
            f"{row['http_overhead_ms']:+.2f} ms, gRPC - HTTP {row['grpc_minus_http_ms']:+.2f} ms"
        )
    return out


# -- report --------------------------------------------------------------------------------------
def headline(
    raw: list[dict], served: list[dict], rounds: list[dict] | None = None, reference="ort-fp32"
) -> dict:
    """The headline figures; `reference` is the raw row of the service's own arrangement
    (`instances_name`), what served throughput and one user's latency are set against."""

    def raw_at(backend, batch):
        return next(r for r in raw if r["backend"] == backend and r["batch"] == batch)

    best = max((r for r in raw if r["backend"] == reference), key=lambda r: r["images_per_s"])
    batch1_ms = raw_at(reference, 1)["latency_ms_p50"]
    http = [r for r in served if r["protocol"] == "http"]
    grpc_rows = [r for r in served if r["protocol"] == "grpc"]
    saturation = max(http, key=lambda r: r["images_per_s"])
    one_http = next(r for r in http if r["concurrency"] == 1)
    one_grpc = next(r for r in grpc_rows if r["concurrency"] == 1)
    at16 = next(r for r in http if r["concurrency"] == 16)
    out = {
        "raw_reference": reference,
        "raw_best": {"batch": best["batch"], "images_per_s": best["images_per_s"]},
        "served_saturation": {
            "concurrency": saturation["concurrency"],
            "images_per_s": saturation["images_per_s"],
        },
        "served_over_raw": saturation["images_per_s"] / best["images_per_s"],
        "raw_batch1_p50_ms": batch1_ms,
        "http_p50_one_user_ms": one_http["p50_ms"],
        "http_overhead_ms": one_http["p50_ms"] - batch1_ms,
        "grpc_p50_one_user_ms": one_grpc["p50_ms"],
        "grpc_minus_http_ms": one_grpc["p50_ms"] - one_http["p50_ms"],
        "images_per_call_at_16_http": at16["images_per_model_call"],
    }
    if rounds:
        # The targets are read from the interleaved rounds (median, with the spread); the
        # sweep's figures above stay for the curves.
        for key in ("served_over_raw", "http_overhead_ms", "grpc_minus_http_ms"):
            values = [r[key] for r in rounds]
            out[f"sweep_{key}"] = out[key]
            out[key] = statistics.median(values)
            out[f"{key}_range"] = [min(values), max(values)]
        for key in ("raw_batch1_p50_ms", "http_p50_one_user_ms", "grpc_p50_one_user_ms"):
            out[key] = statistics.median(r[key] for r in rounds)
        out["rounds"] = len(rounds)
    if any(r["backend"] == "torch-eager" and r["batch"] == 16 for r in raw):
        out["ort_over_torch_at_16"] = (
            raw_at("ort-fp32", 16)["images_per_s"] / raw_at("torch-eager", 16)["images_per_s"]
        )
    return out


def _range(h: dict, key: str, fmt: str) -> str:
    if f"{key}_range" not in h:
        return ""
    lo, hi = h[f"{key}_range"]
    return f" (rounds {lo:{fmt}} to {hi:{fmt}})"


def write_markdown(path: Path, result: dict) -> None:
    h, m = result["headline"], result["machine"]
    lines = [
        "# SlotServe benchmark",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores)"
        + (f", {m['gpu']} (provider {m['provider']})" if m.get("gpu") else "")
        + f", {m['platform']}; onnxruntime "
        f"{m['onnxruntime']}, torch {m['torch']}; {result['started']}. Raw and served figures "
        "come from the same run. The target rows are the median of "
        f"{h.get('rounds', 1)} interleaved rounds (raw, then the served points it is compared "
        "with), with the range over the rounds: this machine's speed drifts between minutes.",
        "",
        "## Headline",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| served HTTP at saturation / raw onnxruntime (`{h.get('raw_reference', 'ort-fp32')}`)"
        " at its best batch | "
        f"{h['served_over_raw']:.2f}{_range(h, 'served_over_raw', '.2f')} | >= 0.70 |",
        f"| HTTP p50, one user, minus raw batch-1 latency | {h['http_overhead_ms']:+.2f} ms"
        f"{_range(h, 'http_overhead_ms', '+.2f')} ({h['http_p50_one_user_ms']:.2f} vs "
        f"{h['raw_batch1_p50_ms']:.2f}) | <= +5 ms |",
        f"| gRPC p50 minus HTTP p50, one user | {h['grpc_minus_http_ms']:+.2f} ms"
        f"{_range(h, 'grpc_minus_http_ms', '+.2f')} | <= +2 ms |",
        f"| images per model call, 16 HTTP users | {h['images_per_call_at_16_http']:.2f} | > 4 |",
    ]
    if "ort_over_torch_at_16" in h:
        lines.append(
            f"| onnxruntime fp32 / torch eager, batch 16 | {h['ort_over_torch_at_16']:.2f}x | "
            ">= 2x (aim) |"
        )
    f = result["flops"]
    lines += [
        f"| model FLOPs per image | {f['per_image'] / 1e9:.3f} GFLOP | |",
        f"| achieved at the best raw batch (`{f.get('best', 'ort-fp32')}`) | "
        f"{f['achieved_gflops']:.1f} GFLOP/s"
        + (
            f" = {100 * f['of_sgemm']:.0f}% of measured SGEMM ({f['sgemm_gflops']:.0f} GFLOP/s)"
            if f.get("sgemm_gflops")
            else ""
        )
        + (
            f", {100 * f['of_nominal']:.0f}% of nominal {f['nominal_gflops']:.0f}"
            if f.get("nominal_gflops")
            else ""
        )
        + " | |",
        "",
        "## Raw model",
        "",
        "| backend | batch | images/s | p50 ms/call | p95 ms/call |",
        "|---|---|---|---|---|",
    ]
    for r in result["raw"]:
        lines.append(
            f"| {r['backend']} | {r['batch']} | {r['images_per_s']:.1f} | "
            f"{r['latency_ms_p50']:.2f} | {r['latency_ms_p95']:.2f} |"
        )
    lines += [
        "",
        "## Served (closed loop, one image per request)",
        "",
        "| protocol | users | images/s | p50 ms | p95 ms | p99 ms | images/call | shed | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["served"]:
        lines.append(
            f"| {r['protocol']} | {r['concurrency']} | {r['images_per_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['images_per_model_call']:.2f} | {r['shed']} | {r['errors']} |"
        )
    lines += ["", "Plots: `raw-throughput.png`, `served-latency.png`.", ""]
    path.write_text("\n".join(lines))


def plot(out: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in sorted({r["backend"] for r in result["raw"]}):
        rows = [r for r in result["raw"] if r["backend"] == backend]
        ax.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows], "o-", label=backend)
    for protocol in ("http", "grpc"):
        best = max(
            (r for r in result["served"] if r["protocol"] == protocol),
            key=lambda r: r["images_per_s"],
        )
        ax.axhline(best["images_per_s"], ls="--", lw=1, label=f"served {protocol} (best)")
    ax.set(xscale="log", xlabel="batch size", ylabel="images / s", title="Raw model throughput")
    batches = sorted({r["batch"] for r in result["raw"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "raw-throughput.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for protocol, style in (("http", "-"), ("grpc", "--")):
        rows = [r for r in result["served"] if r["protocol"] == protocol]
        users = [r["concurrency"] for r in rows]
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            axes[0].plot(users, [r[q] for r in rows], "o" + style, label=f"{protocol} {q[:3]}")
        axes[1].plot(users, [r["images_per_s"] for r in rows], "o" + style, label=protocol)
    axes[0].set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="latency (ms)")
    axes[1].set(xscale="log", xlabel="concurrent users", ylabel="images / s")
    for ax in axes:
        ax.set_xticks(CONCURRENCIES, [str(c) for c in CONCURRENCIES])
        ax.legend(fontsize=8)
    fig.suptitle("Served latency and throughput")
    fig.tight_layout()
    fig.savefig(out / "served-latency.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--seconds", type=float, default=None, help="per served point")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved headline rounds")
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="cpu",
        help="where the raw model runs (torch device and onnxruntime provider) and the "
        "SLOTSERVE_PROVIDER the served one gets",
    )
    parser.add_argument(
        "--batches",
        type=batch_list,
        default=RAW_BATCHES,
        help="raw-model batch sizes, comma-separated, 1 and 16 among them (default 1,4,16,64)",
    )
    parser.add_argument(
        "--retry",
        choices=clients.RETRY_MODES,
        default="at-once",
        help="what served clients do with a 503 / UNAVAILABLE: send again at once, or after "
        "the Retry-After (gRPC: retry pushback) the server asks for",
    )
    parser.add_argument(
        "--triton",
        action="store_true",
        help="also a real Triton server on the same bundle, interleaved with the served model "
        "(loadtests/triton_peer.py, needs `make triton-venv`): triton.json, .md, .png in --out",
    )
    args = parser.parse_args(argv)
    if args.triton:
        from loadtests.triton_peer import missing_triton

        if reason := missing_triton():
            parser.error(reason)
    try:
        check_provider(args.provider)
    except BackendError as err:  # this onnxruntime build lacks the provider
        parser.error(str(err))
    args.rounds = args.rounds or (1 if args.quick else 5)
    round_seconds = 1.0 if args.quick else 6.0
    args.out.mkdir(parents=True, exist_ok=True)
    raw_seconds = 0.3 if args.quick else 3.0
    served_seconds = args.seconds or (2.0 if args.quick else 15.0)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    log("raw model (server not started yet, so nothing competes for the cores)")
    # the raw reference is what the service runs: its model instances, as Settings has them
    instances = Settings().model_instances if args.provider == "cpu" else 1
    reference = instances_name(instances)
    runners = raw_runners(args.threads, args.provider, instances)
    raw = raw_benchmarks(runners, args.batches, raw_seconds)
    gflop = flops_per_image()
    peak = cpu_peak(args.threads) if args.provider == "cpu" else None
    log(f"starting bentoml serve (SLOTSERVE_PROVIDER={args.provider})")
    env = {"SLOTSERVE_PROVIDER": args.provider}
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), env=env) as server:
        bodies = encoded(64)
        served = served_benchmarks(server, CONCURRENCIES, served_seconds, bodies, args.retry)
        best_batch = max(
            (r for r in raw if r["backend"] == reference), key=lambda r: r["images_per_s"]
        )["batch"]
        saturation_users = max(
            (r for r in served if r["protocol"] == "http"), key=lambda r: r["images_per_s"]
        )["concurrency"]
        log(
            f"headline rounds: raw batch 1 and {best_batch}; HTTP x1, gRPC x1, "
            f"HTTP x{saturation_users}"
        )
        rounds = headline_rounds(
            server,
            args.rounds,
            round_seconds,
            runners[reference],
            best_batch,
            saturation_users,
            bodies,
        )
        if args.triton:
            from loadtests.triton_peer import bench_hook

            triton = bench_hook(server, args.out, args.quick)
    # the machine's limit is set against the best fp32 arrangement measured
    fp32 = [r for r in raw if r["backend"] in ("ort-fp32", reference)]
    best = max(fp32, key=lambda r: r["images_per_s"])
    achieved = gflop * best["images_per_s"] / 1e9
    result = {
        "started": started,
        "machine": machine(args.provider),
        "settings": {
            "raw_seconds": raw_seconds,
            "served_seconds": served_seconds,
            "batches": list(args.batches),
            "retry": args.retry,
        },
        "raw": raw,
        "served": served,
        "flops": {"per_image": gflop, "achieved_gflops": achieved, "best": best["backend"]},
    }
    if peak:  # a CPU's peak means nothing beside a GPU run
        result["flops"] |= {
            "of_sgemm": achieved / peak["sgemm_gflops"],
            "of_nominal": achieved / peak["nominal_gflops"] if peak["nominal_gflops"] else None,
            **peak,
        }
    result["rounds"] = rounds
    if args.triton:
        result["triton"] = triton
    result["headline"] = headline(raw, served, rounds, reference)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "bench.md", result)
    plot(args.out, result)
    log(f"wrote {args.out}/bench.json, bench.md, raw-throughput.png, served-latency.png")
    print(json.dumps(result["headline"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
