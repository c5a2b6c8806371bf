"""Training-step timing: fp32 against bf16 autocast, measured in one run (ratios, not times)."""

from __future__ import annotations

import time

import torch

from training.config import load_train_config
from training.model import build_model


def _step_ms(model, opt, x, bf16: bool, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).losses["total"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        if x.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: time their end
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times[1:])[len(times[1:]) // 2]  # median, first step is warm-up


def bench_precision(
    config: str,
    overrides: list[str],
    steps: int = 6,
    threads: int | None = None,
    device: str = "cpu",
) -> dict:
    """Median step time in fp32 and under bf16 autocast on `device` ("cpu" or "cuda")."""
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA GPU here")
    cfg = load_train_config(config, overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).train().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    s = cfg.model.image_size
    x = torch.rand(cfg.data.batch_size, 3, s, s, device=device)
    fp32 = _step_ms(model, opt, x, False, steps)
    bf16 = _step_ms(model, opt, x, True, steps)
    return {
        "batch_size": cfg.data.batch_size,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "fp32_step_ms": round(fp32, 1),
        "bf16_step_ms": round(bf16, 1),
        "bf16_speedup": round(fp32 / bf16, 3),
    }
