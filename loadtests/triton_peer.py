"""NVIDIA Triton Inference Server as the benchmark's peer: the same bundle, the same machine,
the same closed-loop load generator, measured interleaved with SlotServe in one run.

    make triton-venv                                    # .venv-triton: tritonserver + onnxruntime
    python -m loadtests.bench --out reports/bench --triton      # the bench with Triton beside it
    python -m loadtests.triton_peer --out reports/triton        # the comparison alone

The server is the real `tritonserver` shipped in PyPI's `nvidia-pytriton` (Python backend only,
no onnxruntime backend): `python -m export triton` writes `NAME_python/`, a Python-backend
model that runs the bundle's ONNX graph with onnxruntime, batched by Triton's dynamic batcher
(docs/triton.md). Its environment (numpy 1.x, which the stub was built against, and
onnxruntime) is `.venv-triton`, separate from the project's (numpy 2.x), given to the model
as Triton's EXECUTION_ENV_PATH.

What is compared (at 1, 4, 16 and 64 users, HTTP and gRPC):
- Triton: float32 tensors in (3 x H x W), the raw outputs out (masks, codes, distances);
- SlotServe: an encoded PNG in, objects with RLE masks out; and SlotServe with its own
  pre / post-processing (decode, preprocess, postprocess, from each answer's `timings_ms`)
  taken out of each latency, which leaves what the tensor path costs it.
Triton's Python backend adds its own overhead (the request crosses shared memory to a stub
process and back), which a C++ onnxruntime backend in a full Triton would not pay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from loadtests.server import REPO, Server, free_port, serve, stop, wait_until_ready
from service.settings import Settings

BUNDLE = REPO / "models" / "slotserve-shapes"
TRITON_ENV = REPO / ".venv-triton"
"""Made by `make triton-venv`; SLOTSERVE_TRITON_ENV points elsewhere."""
CONCURRENCIES = (1, 4, 16, 64)
PROTOCOLS = ("http", "grpc")
PEERS = ("slotserve", "triton")


class TritonUnavailable(RuntimeError):
    """The Triton environment is missing or broken; the message says what to run."""


def log(msg: str) -> None:
    print(f"[triton {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the server ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TritonInstall:
    """Where `make triton-venv` put tritonserver, its Python backend and its libraries."""

    env: Path

    @property
    def package(self) -> Path:
        py = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.env / "lib" / py / "site-packages"

    @property
    def server(self) -> Path:
        return self.package / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.package / "pytriton" / "tritonserver" / "backends"

    @property
    def libraries(self) -> Path:
        return self.package / "nvidia_pytriton.libs"

    @classmethod
    def find(cls, env: str | Path | None = None) -> TritonInstall:
        env = Path(env or os.environ.get("SLOTSERVE_TRITON_ENV") or TRITON_ENV).absolute()
        install = cls(env)
        needed = [
            install.server,
            install.backends / "python" / "libtriton_python.so",
            install.backends / "python" / "triton_python_backend_stub",
            env / "bin" / "activate",
        ]
        missing = [p for p in needed if not p.exists()]
        if missing:
            raise TritonUnavailable(f"{missing[0]} is missing: run `make triton-venv`")
        return install


def export_repository(
    repo: Path,
    install: TritonInstall,
    bundle: Path = BUNDLE,
    max_batch_size: int = 32,
    instances: int = 1,
    intra_op_threads: int = 0,
) -> str:
    """Write the Python-backend model of `bundle` into `repo`; returns the model's name."""
    from export.triton import write_python_model

    config = write_python_model(
        bundle,
        repo,
        python_env=str(install.env),
        max_batch_size=max_batch_size,
        instances=instances,
        intra_op_threads=intra_op_threads,
    )
    return config.parent.name


@dataclass
class TritonServer:
    model: str
    url: str
    grpc_target: str
    metrics_url: str
    log: Path
    proc: subprocess.Popen

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def metric_value(self, name: str, **labels) -> float:
        """Sum of the samples of `name` from Triton's /metrics whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.metrics_url, timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            # the parser names counter samples NAME_total; Triton's own names lack the suffix
            if sample.name in (name, f"{name}_total")
            and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def batching(self) -> tuple[float, float]:
        """(requests, model executions) so far: Triton's nv_inference_count counts the
        images (requests x their batch), nv_inference_exec_count the batched model calls."""
        return (
            self.metric_value("nv_inference_count", model=self.model),
            self.metric_value("nv_inference_exec_count", model=self.model),
        )


@contextlib.contextmanager
def start(repo: Path, model: str, install: TritonInstall, workdir: Path, timeout: float = 90):
    """Run `tritonserver` on loopback (free ports) with `model` loaded, until the block ends.

    The repository may hold models for backends this build lacks (onnxruntime, TensorRT):
    explicit model control loads only `model`."""
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(
            [str(install.libraries), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
        ),
    }
    command = [
        str(install.server),
        f"--model-repository={repo}",
        "--model-control-mode=explicit",
        f"--load-model={model}",
        f"--backend-directory={install.backends}",
        "--strict-model-config=true",
        "--exit-on-error=true",
        "--http-address=127.0.0.1",
        f"--http-port={http}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
        "--allow-gpu-metrics=false",
        "--metrics-interval-ms=500",
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "tritonserver.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = TritonServer(
        model,
        f"127.0.0.1:{http}",
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{metrics}/metrics",
        log_file,
        proc,
    )
    try:
        wait_until_ready(
            proc, lambda: _ready(server), timeout, "tritonserver", server.log_tail,
            TritonUnavailable, TritonUnavailable,
        )  # fmt: skip
        yield server
    finally:
        stop(proc)


def _ready(server: TritonServer) -> bool:
    try:
        url = f"http://{server.url}/v2/models/{server.model}/ready"
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- the load: one closed loop for both servers ------------------------------------------------
@dataclass
class Answer:
    ok: bool
    shed: bool = False
    processing_s: float | None = None
    """SlotServe's own decode + preprocess + postprocess for this image (its `timings_ms`)."""


@dataclass
class Point:
    latencies: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)
    """Per answered request, SlotServe's processing (same order as latencies)."""
    shed: int = 0
    errors: int = 0
    elapsed: float = 0.0


Call = Callable[[int], Awaitable[Answer]]


async def closed_loop(call: Call, users: int, seconds: float) -> Point:
    """`users` clients, each sending its next request (image k, k + users, ...) as soon as its
    last one is answered; the same loop as the bench's served points, for either server."""
    point = Point()
    deadline = time.perf_counter() + seconds

    async def user(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            answer = await call(i)
            i += users
            if answer.ok:
                point.latencies.append(time.perf_counter() - t)
                if answer.processing_s is not None:
                    point.processing.append(answer.processing_s)
            elif answer.shed:
                point.shed += 1
            else:
                point.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*[user(k) for k in range(users)])
    point.elapsed = time.perf_counter() - started
    return point


@dataclass
class Workload:
    """The same images for both: encoded PNG files for SlotServe (lossless, so the model sees
    the same pixels) and the model's input tensors (1 x 3 x H x W float32) for Triton."""

    bodies: list[bytes]
    tensors: list[np.ndarray]

    @classmethod
    def make(cls, n: int = 64, seed: int = 11) -> Workload:
        from loadtests.images import encode
        from loadtests.measure import BUNDLE, scenes
        from runtime.contract import load_bundle, to_model_input

        spec = load_bundle(BUNDLE).input
        images = scenes(n, seed=seed)
        tensors = [to_model_input(img[None], spec) for img in images]
        return cls([encode(img) for img in images], tensors)


def _processing(timings) -> float:
    get = timings.get if isinstance(timings, dict) else lambda k: getattr(timings, k)
    return (get("decode") + get("preprocess") + get("postprocess")) / 1e3


@contextlib.asynccontextmanager
async def slotserve_client(server: Server, protocol: str, users: int, work: Workload):
    """A call that sends image k to SlotServe's /decompose (HTTP) or Decompose (gRPC)."""
    import aiohttp
    import grpc

    from loadtests.images import multipart
    from service.rpc.slotserve.v1 import slotserve_pb2 as pb
    from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc

    if protocol == "http":
        uploads = [multipart("image", [("s.png", b, "image/png")]) for b in work.bodies]
        connector = aiohttp.TCPConnector(limit=users)
        async with aiohttp.ClientSession(server.url, connector=connector) as session:

            async def call(k: int) -> Answer:
                body, ctype = uploads[k % len(uploads)]
                headers = {"Content-Type": ctype}
                async with session.post("/decompose", data=body, headers=headers) as r:
                    if r.status != 200:
                        await r.read()
                        return Answer(False, shed=r.status == 503)
                    answer = await r.json()
                return Answer("objects" in answer, processing_s=_processing(answer["timings_ms"]))

            yield call
    else:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.SlotServeStub(channel)

            async def call(k: int) -> Answer:
                request = pb.DecomposeRequest(image=work.bodies[k % len(work.bodies)])
                try:
                    answer = await stub.Decompose(request)
                except grpc.aio.AioRpcError as err:
                    return Answer(False, shed=err.code() == grpc.StatusCode.UNAVAILABLE)
                return Answer(True, processing_s=_processing(answer.timings_ms))

            yield call


@contextlib.asynccontextmanager
async def triton_client(server: TritonServer, protocol: str, users: int, work: Workload):
    """A call that sends image k's tensor to Triton (KServe v2) and takes every output back
    as binary tensor data. Inputs are built once per image, as SlotServe's uploads are."""
    from runtime.contract import INPUT_NAME, OUTPUT_CODES, OUTPUT_NAMES

    if protocol == "http":
        import tritonclient.http.aio as client_lib

        client = client_lib.InferenceServerClient(server.url, conn_limit=users)
        outputs = [client_lib.InferRequestedOutput(n, binary_data=True) for n in OUTPUT_NAMES]
    else:
        import tritonclient.grpc.aio as client_lib

        client = client_lib.InferenceServerClient(server.grpc_target)
        outputs = [client_lib.InferRequestedOutput(n) for n in OUTPUT_NAMES]
    inputs = []
    for tensor in work.tensors:
        infer_input = client_lib.InferInput(INPUT_NAME, list(tensor.shape), "FP32")
        infer_input.set_data_from_numpy(tensor)
        inputs.append(infer_input)
    from tritonclient.utils import InferenceServerException

    async def call(k: int) -> Answer:
        try:
            result = await client.infer(server.model, [inputs[k % len(inputs)]], outputs=outputs)
        except InferenceServerException:
            return Answer(False)
        return Answer(result.as_numpy(OUTPUT_CODES).shape[0] == 1)

    try:
        yield call
    finally:
        await client.close()


async def measure(peer, server, protocol: str, users: int, seconds: float, work) -> Point:
    opened = slotserve_client if peer == "slotserve" else triton_client
    async with opened(server, protocol, users, work) as call:
        return await closed_loop(call, users, seconds)


# -- the comparison ------------------------------------------------------------------------------
def percentile_ms(values, q: float) -> float:
    return float(1e3 * np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def raw_batch1_ms(seconds: float) -> float:
    """p50 of one onnxruntime call at batch 1 in this process (the service's own backend),
    while both servers idle: what neither server can go below at one user."""
    from loadtests.measure import scenes, time_calls
    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.contract import load_bundle, to_model_input

    manifest = load_bundle(BUNDLE)
    backend = OnnxRuntimeBackend(BUNDLE / "model.onnx", manifest, "fp32", "cpu")
    batch = to_model_input(scenes(1), manifest.input)
    return percentile_ms(time_calls(backend.infer, batch, seconds), 50)


def counters(peer: str, server) -> tuple[float, float]:
    """(images, model calls) so far, from each server's own metrics."""
    if peer == "triton":
        return server.batching()
    return (
        server.metric_value("slotserve_batch_images_sum"),
        server.metric_value("slotserve_batch_images_count"),
    )


def compare(
    slotserve: Server,
    triton: TritonServer,
    concurrencies=CONCURRENCIES,
    seconds: float = 8.0,
    rounds: int = 3,
) -> list[dict]:
    """Every (users, protocol) point on both servers, back to back, `rounds` times, the order
    of the two alternating between rounds: a drift of the shared machine's speed hits both
    sides of each ratio. One row per point and round."""
    work = Workload.make()
    servers = {"slotserve": slotserve, "triton": triton}
    for peer, protocol in ((p, q) for p in PEERS for q in PROTOCOLS):  # connections, caches
        asyncio.run(measure(peer, servers[peer], protocol, 2, 1.0, work))
    rows = []
    for r in range(rounds):
        raw_ms = raw_batch1_ms(min(seconds, 2.0))
        order = PEERS if r % 2 == 0 else PEERS[::-1]
        for users in concurrencies:
            for protocol in PROTOCOLS:
                for peer in order:
                    server = servers[peer]
                    images0, calls0 = counters(peer, server)
                    point = asyncio.run(measure(peer, server, protocol, users, seconds, work))
                    images1, calls1 = counters(peer, server)
                    rows.append(row(r, peer, protocol, users, point, raw_ms))
                    calls = calls1 - calls0
                    rows[-1]["images_per_model_call"] = (
                        (images1 - images0) / calls if calls else float("nan")
                    )
                    log(
                        f"round {r + 1}/{rounds} {peer:9s} {protocol:4s} x{users:<3d}: "
                        f"{rows[-1]['images_per_s']:6.1f} img/s, p50 {rows[-1]['p50_ms']:7.1f} "
                        f"ms, p99 {rows[-1]['p99_ms']:7.1f} ms, "
                        f"{rows[-1]['images_per_model_call']:.1f} img/call, shed {point.shed}, "
                        f"errors {point.errors}"
                    )
    return rows


def row(r: int, peer: str, protocol: str, users: int, point: Point, raw_ms: float) -> dict:
    out = {
        "round": r,
        "peer": peer,
        "protocol": protocol,
        "users": users,
        "requests_ok": len(point.latencies),
        "images_per_s": len(point.latencies) / point.elapsed,
        "p50_ms": percentile_ms(point.latencies, 50),
        "p99_ms": percentile_ms(point.latencies, 99),
        "shed": point.shed,
        "errors": point.errors,
        "raw_batch1_p50_ms": raw_ms,
    }
    if point.processing:
        # SlotServe with its image work timed apart: each latency less that request's own
        # decode + preprocess + postprocess, i.e. what its tensor path (transport, batching,
        # model) cost; the processing itself is reported beside it.
        net = np.asarray(point.latencies) - np.asarray(point.processing)
        out |= {
            "processing_p50_ms": percentile_ms(point.processing, 50),
            "without_processing_p50_ms": percentile_ms(net, 50),
            "without_processing_p99_ms": percentile_ms(net, 99),
        }
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Per (protocol, users): each side's median over rounds, and the ratios taken within each
    round (median and range): throughput SlotServe / Triton, p99 SlotServe / Triton."""
    points = []
    for protocol in PROTOCOLS:
        for users in sorted({r["users"] for r in rows}):
            sel = [r for r in rows if r["protocol"] == protocol and r["users"] == users]
            if not sel:
                continue
            out = {"protocol": protocol, "users": users}
            for peer in PEERS:
                mine = [r for r in sel if r["peer"] == peer]
                for key in ("images_per_s", "p50_ms", "p99_ms", "images_per_model_call"):
                    out[f"{peer}_{key}"] = statistics.median(r[key] for r in mine)
                out[f"{peer}_shed"] = sum(r["shed"] for r in mine)
                out[f"{peer}_errors"] = sum(r["errors"] for r in mine)
            for key in (
                "processing_p50_ms",
                "without_processing_p50_ms",
                "without_processing_p99_ms",
            ):
                values = [r[key] for r in sel if r["peer"] == "slotserve" and key in r]
                if values:
                    out[f"slotserve_{key}"] = statistics.median(values)
            by_round = {}
            for r in sel:
                by_round.setdefault(r["round"], {})[r["peer"]] = r
            pairs = [v for v in by_round.values() if len(v) == 2]
            for name, key in (("throughput", "images_per_s"), ("p99", "p99_ms")):
                ratios = [_ratio(v["slotserve"][key], v["triton"][key]) for v in pairs]
                out[f"{name}_ratio"] = statistics.median(ratios)
                out[f"{name}_ratio_range"] = [min(ratios), max(ratios)]
            points.append(out)
    return {"points": points, "rounds": len({r["round"] for r in rows})}


def headline(summary: dict) -> dict:
    """Per protocol: each side's best throughput over the user counts and their ratio; the
    p99 ratio at every user count; and at one user, each side's p50 over a raw batch-1 call."""
    out = {}
    for protocol in PROTOCOLS:
        points = [p for p in summary["points"] if p["protocol"] == protocol]
        if not points:
            continue
        best = {peer: max(p[f"{peer}_images_per_s"] for p in points) for peer in PEERS}
        out[protocol] = {
            "slotserve_best_images_per_s": best["slotserve"],
            "triton_best_images_per_s": best["triton"],
            "best_throughput_ratio": _ratio(best["slotserve"], best["triton"]),
            "p99_ratio_by_users": {str(p["users"]): p["p99_ratio"] for p in points},
            "throughput_ratio_by_users": {str(p["users"]): p["throughput_ratio"] for p in points},
        }
    return out


def overhead_at_one_user(rows: list[dict]) -> dict:
    """Median over rounds of (p50 at one user - raw batch-1 onnxruntime p50 of that round)."""
    out = {}
    for peer in PEERS:
        for protocol in PROTOCOLS:
            sel = [r for r in rows if (r["peer"], r["protocol"], r["users"]) == (peer, protocol, 1)]
            if sel:
                out[f"{peer}_{protocol}"] = statistics.median(
                    r["p50_ms"] - r["raw_batch1_p50_ms"] for r in sel
                )
    if rows:
        out["raw_batch1_p50_ms"] = statistics.median({r["raw_batch1_p50_ms"] for r in rows})
    return out


def _fmt_range(value: float, bounds: list[float]) -> str:
    lo, hi = bounds
    return f"{value:.2f} ({lo:.2f}-{hi:.2f})" if hi > lo else f"{value:.2f}"


def _load(result: dict) -> str:
    """The 5-minute load average around the run: at the start it says whether other work was
    using the cores (it lags: a job that ended in the last minutes still counts); at the end it
    is mostly the benchmark's own servers and clients."""
    before, after = result.get("load_average_5min", [float("nan")] * 2)
    return (
        f"5-minute load average {before:.1f} at the start and {after:.1f} at the end, the "
        "latter mostly this run's own servers and clients"
    )


def write_markdown(path: Path, result: dict) -> None:
    m, s, h, o = result["machine"], result["settings"], result["headline"], result["overhead"]
    lines = [
        "# SlotServe beside NVIDIA Triton",
        "",
        f"{result['started']}; {m['cpu']} ({m['cores']} cores; {_load(result)}). Same "
        f"bundle ({s['bundle']}), same machine, same closed-loop load generator (one asyncio "
        f"process, one image per request), measured interleaved: {s['rounds']} round(s) of "
        f"{s['seconds']:.0f} s per point, the two servers back to back at each point, their "
        "order alternating between rounds. Ratios are SlotServe / Triton, taken within each "
        "round: median (range over rounds).",
        "",
        f"- **SlotServe**: `bentoml serve` (in-process batcher, max batch {s['max_batch_size']}, "
        f"{_instances(s)}, onnxruntime {m['onnxruntime']} on the CPU). Takes a PNG file, "
        "answers JSON: objects with COCO-RLE masks, codes, boxes, after decoding, "
        "preprocessing and postprocessing.",
        f"- **Triton** {s['triton_version']} (`tritonserver` from nvidia-pytriton "
        f"{s['pytriton']}): the `NAME_python` model of `python -m export triton`, onnxruntime "
        f"{s['triton_onnxruntime']} in the Python backend, dynamic batcher (max batch "
        f"{s['max_batch_size']}, preferred 8/16/32, max queue delay 2 ms), {_instances(s)} "
        "(as SlotServe). Takes the model's input tensor (1 x 3 x 64 x 64 float32, 48 KiB), "
        "answers the raw outputs as binary tensors (masks 11 x 64 x 64 float32: 176 KiB, "
        "codes, distances): no image work.",
        "- **Triton's Python backend adds its own overhead**: each batch crosses shared memory "
        "to a separate stub process and back, and `model.py` concatenates and splits the "
        "batch in Python. A full Triton with its C++ onnxruntime backend (docs/triton.md) does "
        "not pay that; this is the Triton that runs on this machine.",
        "",
        "## Headline",
        "",
        "| protocol | SlotServe best img/s | Triton best img/s | SlotServe / Triton |",
        "|---|---|---|---|",
    ]
    for protocol, v in h.items():
        lines.append(
            f"| {protocol} | {v['slotserve_best_images_per_s']:.1f} | "
            f"{v['triton_best_images_per_s']:.1f} | {v['best_throughput_ratio']:.2f} |"
        )
    lines += [
        "",
        f"One user, p50 over a raw onnxruntime batch-1 call ({o['raw_batch1_p50_ms']:.1f} ms, "
        "this process, servers idle): "
        + ", ".join(
            f"{k.replace('_', ' ')} {v:+.1f} ms" for k, v in o.items() if k != "raw_batch1_p50_ms"
        )
        + ".",
        "",
        "## Per point",
        "",
        "Throughput counts answered requests only (SlotServe sheds with 503 / UNAVAILABLE past "
        "its latency budget; Triton has no queue policy here and queues instead). `w/o proc.`: "
        "each SlotServe latency less that request's own decode + preprocess + postprocess "
        "(`timings_ms`).",
        "",
        "| protocol | users | img/s SlotServe | img/s Triton | throughput ratio | p50 / p99 ms "
        "SlotServe | p50 / p99 ms Triton | p99 ratio | SlotServe w/o proc. p50 / p99 ms | "
        "proc. p50 ms | img/call S / T | shed S / T |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["summary"]["points"]:
        lines.append(
            f"| {p['protocol']} | {p['users']} | {p['slotserve_images_per_s']:.1f} | "
            f"{p['triton_images_per_s']:.1f} | "
            f"{_fmt_range(p['throughput_ratio'], p['throughput_ratio_range'])} | "
            f"{p['slotserve_p50_ms']:.1f} / {p['slotserve_p99_ms']:.1f} | "
            f"{p['triton_p50_ms']:.1f} / {p['triton_p99_ms']:.1f} | "
            f"{_fmt_range(p['p99_ratio'], p['p99_ratio_range'])} | "
            f"{p.get('slotserve_without_processing_p50_ms', float('nan')):.1f} / "
            f"{p.get('slotserve_without_processing_p99_ms', float('nan')):.1f} | "
            f"{p.get('slotserve_processing_p50_ms', float('nan')):.1f} | "
            f"{p['slotserve_images_per_model_call']:.1f} / "
            f"{p['triton_images_per_model_call']:.1f} | "
            f"{p['slotserve_shed']} / {p['triton_shed']} |"
        )
    errors = sum(r["errors"] for r in result["rows"])
    lines += ["", f"Errors (neither answer nor shed): {errors}. Plot: `triton.png`.", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["summary"]["points"]
    users = sorted({p["users"] for p in points})
    colours = {"slotserve": "tab:blue", "triton": "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for protocol, marker in (("http", "o"), ("grpc", "s")):
        sel = sorted((p for p in points if p["protocol"] == protocol), key=lambda p: p["users"])
        ax = axes[1 if protocol == "http" else 2]
        if not sel:
            ax.set_visible(False)
            continue
        x = [p["users"] for p in sel]
        for peer in PEERS:
            axes[0].plot(
                x, [p[f"{peer}_images_per_s"] for p in sel], marker=marker,
                ls="-" if protocol == "http" else "--", color=colours[peer],
                label=f"{peer} {protocol}",
            )  # fmt: skip
        for peer in PEERS:
            for q, ls in (("p50", "-"), ("p99", "--")):
                ax.plot(x, [p[f"{peer}_{q}_ms"] for p in sel], marker=marker, ls=ls,
                        color=colours[peer], label=f"{peer} {q}")  # fmt: skip
        ax.plot(
            x, [p.get("slotserve_without_processing_p99_ms", np.nan) for p in sel],
            marker="x", ls=":", lw=1, color="tab:purple", label="slotserve p99 w/o processing",
        )  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="latency (ms)")
        ax.set_title(f"{protocol.upper()} latency")
    axes[0].set(xscale="log", xlabel="concurrent users", ylabel="answered images / s")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("Throughput")
    for ax in (a for a in axes if a.get_visible()):
        ax.set_xticks(users, [str(u) for u in users])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"SlotServe (PNG in, RLE masks out) beside Triton {result['settings']['triton_version']}"
        " (Python backend, tensors in and out), same bundle and machine, interleaved"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def triton_versions(install: TritonInstall, server: TritonServer) -> dict:
    import importlib.metadata as md

    meta = httpx.get(f"http://{server.url}/v2", timeout=10).json()
    probe = "import onnxruntime, numpy; print(onnxruntime.__version__, numpy.__version__)"
    ort_version, numpy_version = subprocess.run(
        [str(install.env / "bin" / "python"), "-c", probe],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    pytriton = next(iter(install.package.glob("nvidia_pytriton-*.dist-info")), None)
    return {
        "triton_version": meta.get("version", "?"),
        "pytriton": pytriton.name.removesuffix(".dist-info").split("-")[1] if pytriton else "?",
        "triton_onnxruntime": ort_version,
        "triton_numpy": numpy_version,
        "tritonclient": md.version("tritonclient"),
    }


def _instances(s: dict) -> str:
    """'2 model instances of 1 thread each' (older reports: one instance)."""
    n = s.get("instances", 1)
    threads = s.get("threads_per_instance", 0) or "all the cores'"
    return f"{n} model instance{'s' if n > 1 else ''} of {threads} thread(s) each"


def run_beside(
    slotserve: Server,
    out: Path,
    seconds: float,
    rounds: int,
    concurrencies=CONCURRENCIES,
    max_batch_size: int = 32,
    install: TritonInstall | None = None,
) -> dict:
    """Start Triton on the shipped bundle beside a running SlotServe, compare, and write
    triton.json, triton.md and triton.png under `out`; returns the headline."""
    from loadtests.measure import machine

    install = install or TritonInstall.find()
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()[1]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        # Triton gets SlotServe's arrangement: as many model instances, as many threads each
        settings = Settings()
        instances, threads = settings.model_instances, settings.threads_per_instance
        model = export_repository(
            repo, install, max_batch_size=max_batch_size, instances=instances,
            intra_op_threads=threads,
        )  # fmt: skip
        with start(repo, model, install, Path(tmp) / "work") as triton:
            log(f"tritonserver ready ({triton.url}); comparing at users {list(concurrencies)}")
            versions = triton_versions(install, triton)
            rows = compare(slotserve, triton, concurrencies, seconds, rounds)
    summary = summarise(rows)
    result = {
        "started": started,
        "machine": machine("cpu"),
        "settings": {
            "bundle": BUNDLE.name,
            "seconds": seconds,
            "rounds": rounds,
            "max_batch_size": max_batch_size,
            "instances": instances,
            "threads_per_instance": threads,
            **versions,
        },
        "load_average_5min": [load_before, os.getloadavg()[1]],
        "headline": headline(summary),
        "overhead": overhead_at_one_user(rows),
        "summary": summary,
        "rows": rows,
    }
    (out / "triton.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out / "triton.md", result)
    plot(out / "triton.png", result)
    log(f"wrote {out}/triton.json, triton.md, triton.png")
    return result["headline"]


def missing_triton() -> str | None:
    """Why Triton cannot run here (one line), or None."""
    try:
        TritonInstall.find()
    except TritonUnavailable as err:
        return str(err)
    return None


def bench_hook(slotserve: Server, out: Path, quick: bool) -> dict:
    """`python -m loadtests.bench --triton`: the comparison beside the bench's own server."""
    return run_beside(slotserve, out, 2.0 if quick else 8.0, 1 if quick else 3)


def user_counts(text: str) -> tuple[int, ...]:
    try:
        users = tuple(sorted({int(u) for u in text.split(",") if u.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not users or users[0] < 1:
        raise argparse.ArgumentTypeError(f"user counts must be >= 1: {text!r}")
    return users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.triton_peer", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="one round of 2 s points")
    parser.add_argument("--seconds", type=float, default=None, help="per point (default 8)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument("--users", type=user_counts, default=CONCURRENCIES)
    args = parser.parse_args(argv)
    try:
        install = TritonInstall.find()
    except TritonUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 3)
    from service.settings import Settings

    max_batch = Settings().max_batch_size
    log("starting bentoml serve (SLOTSERVE_PROVIDER=cpu)")
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(Path(tmp), env={"SLOTSERVE_PROVIDER": "cpu"}) as server,
    ):
        try:
            h = run_beside(server, args.out, seconds, rounds, args.users, max_batch, install)
        except TritonUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print(json.dumps(h, indent=2))
    failed = sum(r["errors"] for r in json.loads((args.out / "triton.json").read_text())["rows"])
    if failed:
        print(f"error: {failed} requests failed (neither answered nor shed)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
