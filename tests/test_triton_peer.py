"""The Triton comparison's own logic: its closed loop and how it turns rounds into ratios
(the real servers: tests/test_triton_server.py and `make bench-triton`)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from loadtests.triton_peer import (
    Answer,
    closed_loop,
    headline,
    overhead_at_one_user,
    plot,
    summarise,
    user_counts,
    write_markdown,
)


def test_closed_loop_counts_answers_sheds_and_errors_apart():
    kinds = itertools.cycle(["ok", "ok", "shed", "error"])
    seen: list[int] = []

    async def call(k: int) -> Answer:
        seen.append(k)
        await asyncio.sleep(0.005)
        kind = next(kinds)
        return Answer(
            kind == "ok", shed=kind == "shed", processing_s=0.001 if kind == "ok" else None
        )

    point = asyncio.run(closed_loop(call, users=3, seconds=0.3))
    total = len(point.latencies) + point.shed + point.errors
    assert total == len(seen) > 12
    assert len(point.latencies) == len(point.processing)
    assert abs(len(point.latencies) - 2 * point.shed) <= 2 and abs(point.shed - point.errors) <= 1
    assert all(latency >= 0.005 for latency in point.latencies)
    # each user walks its own images: user k sends k, k + 3, k + 6, ...
    assert {k % 3 for k in seen[:3]} == {0, 1, 2}


def _row(r, peer, protocol, users, images_per_s, p99, **extra):
    return {
        "round": r, "peer": peer, "protocol": protocol, "users": users,
        "images_per_s": images_per_s, "p50_ms": p99 / 2, "p99_ms": p99, "shed": 0, "errors": 0,
        "images_per_model_call": 1.0, "raw_batch1_p50_ms": 10.0, **extra,
    }  # fmt: skip


ROWS = [
    # round 0: the machine is fast; round 1: it is slow (another job took a core)
    _row(0, "slotserve", "http", 1, 10.0, 100.0, processing_p50_ms=2.0,
         without_processing_p50_ms=48.0, without_processing_p99_ms=98.0),
    _row(0, "triton", "http", 1, 5.0, 200.0),
    _row(1, "slotserve", "http", 1, 20.0, 400.0, processing_p50_ms=3.0,
         without_processing_p50_ms=197.0, without_processing_p99_ms=397.0),
    _row(1, "triton", "http", 1, 40.0, 100.0),
]  # fmt: skip


def test_ratios_are_taken_within_each_round_then_the_median():
    (point,) = summarise(ROWS)["points"]
    # per round 10/5 = 2.0 and 20/40 = 0.5: median 1.25 (the ratio of the medians would be
    # 15 / 22.5 = 0.67, which mixes a fast minute of one server with a slow one of the other)
    assert point["throughput_ratio"] == pytest.approx(1.25)
    assert point["throughput_ratio_range"] == [0.5, 2.0]
    assert point["p99_ratio"] == pytest.approx((0.5 + 4.0) / 2)
    assert point["slotserve_images_per_s"] == 15.0 and point["triton_images_per_s"] == 22.5
    assert point["slotserve_without_processing_p99_ms"] == pytest.approx(247.5)
    h = headline(summarise(ROWS))
    assert h["http"]["best_throughput_ratio"] == pytest.approx(15.0 / 22.5)
    assert overhead_at_one_user(ROWS) == {
        "slotserve_http": pytest.approx((40.0 + 190.0) / 2),
        "triton_http": pytest.approx((90.0 + 40.0) / 2),
        "raw_batch1_p50_ms": 10.0,
    }


def test_report_files_show_both_servers(tmp_path):
    summary = summarise(ROWS)
    result = {
        "started": "now",
        "machine": {"cpu": "a CPU", "cores": 2, "onnxruntime": "1.x"},
        "settings": {
            "bundle": "b", "seconds": 1.0, "rounds": 2, "max_batch_size": 32,
            "triton_version": "2.51.0", "pytriton": "0.7.0", "triton_onnxruntime": "1.x",
        },
        "headline": headline(summary), "overhead": overhead_at_one_user(ROWS),
        "summary": summary, "rows": ROWS,
    }  # fmt: skip
    write_markdown(tmp_path / "triton.md", result)
    text = (tmp_path / "triton.md").read_text()
    assert "| http | 15.0 | 22.5 | 0.67 |" in text  # the headline row
    assert "1.25 (0.50-2.00)" in text  # the per-point ratio with its range
    assert "Python backend adds its own overhead" in text
    plot(tmp_path / "triton.png", result)
    assert (tmp_path / "triton.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_counts_are_checked():
    import argparse

    assert user_counts("64,1,16") == (1, 16, 64)
    for bad in ("", "0,4", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            user_counts(bad)


def test_without_the_triton_environment_both_commands_refuse_before_any_work(tmp_path):
    import os

    from tests.conftest import run_module

    env = {**os.environ, "SLOTSERVE_TRITON_ENV": str(tmp_path / "none")}
    bench = run_module("loadtests.bench", "--out", tmp_path / "b", "--triton", env=env, timeout=120)
    peer = run_module("loadtests.triton_peer", "--out", tmp_path / "t", env=env, timeout=120)
    assert bench.returncode == 2 and "run `make triton-venv`" in bench.stderr.splitlines()[-1]
    assert peer.returncode == 1 and peer.stderr.count("\n") == 1
    assert "run `make triton-venv`" in peer.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "t").exists()
