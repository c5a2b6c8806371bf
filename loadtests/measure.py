"""What the load tests measure with: the shipped bundle, test images, call timing,
percentiles and a description of the machine. Shared by `loadtests.bench`,
`loadtests.bundles`, `loadtests.memory`, `loadtests.overload`, `loadtests.reliability`,
`loadtests.triton_peer` and `loadtests.utilisation`.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from loadtests.images import encode
from loadtests.server import REPO

BUNDLE = REPO / "models" / "slotserve-shapes"
CHECKPOINT = BUNDLE / "model.safetensors"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def scenes(n: int, seed: int = 7) -> np.ndarray:
    from training.data.shapes import generate_batch

    half = generate_batch((n + 1) // 2, seed=seed, variant="solid")
    rest = generate_batch(n // 2, seed=seed + 1, variant="textured")
    return np.stack([s.image for s in half + rest])


def encoded(n: int) -> list[bytes]:
    return [encode(img) for img in scenes(n, seed=11)]


def time_calls(fn, batch, min_seconds: float, min_calls: int = 5) -> list[float]:
    for _ in range(2):
        fn(batch)  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t)
    return times


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(provider: str = "cpu") -> dict:
    import onnxruntime
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__.split("+")[0],
        "provider": provider,
        "gpu": torch.cuda.get_device_name() if provider == "cuda" else None,
    }
