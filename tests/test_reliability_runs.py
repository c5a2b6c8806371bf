"""Short versions of the reliability runs and the benchmark (the full ones: `make soak`,
`make bench`). Each starts its own server through the same code the full runs use."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.slow


def test_killed_workers_are_restarted_and_requests_succeed_after(tmp_path):
    res = run_module(
        "loadtests.reliability", "crash", "--out", tmp_path, "--users", "4",
        "--crash-seconds", "20", timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("crash-1-worker", "crash-2-workers"):
        run = json.loads((tmp_path / f"{name}.json").read_text())
        assert run["new_pid"] != run["killed_pid"], run
        assert run["all_ok_after_burst"] and run["ok_after_burst"] > 0, run
        # the burst is bounded: failures only around the kill, not for the rest of the run
        assert run["error_burst_s"] < 15, run
    assert "kill -9 one of 2 slotserve worker(s)" in (tmp_path / "reliability.md").read_text()


def test_short_soak_has_no_errors_and_flat_memory(tmp_path):
    res = run_module(
        "loadtests.reliability", "soak", "--out", tmp_path, "--minutes", "0.75", "--users", "4",
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    soak = json.loads((tmp_path / "soak.json").read_text())
    assert soak["requests"] > 50 and soak["errors"] == 0, soak
    assert soak["rss_growth_pct"] < 10, soak
    # the run names what it served, as the service reports it
    from runtime.contract import read_manifest
    from service.settings import DEFAULT_BUNDLE

    shipped = read_manifest(DEFAULT_BUNDLE)
    assert soak["bundle"].startswith(f"{shipped.name} v{shipped.version} ("), soak["bundle"]
    assert f"serving {soak['bundle']}" in (tmp_path / "reliability.md").read_text()


def test_quick_benchmark_writes_its_report(tmp_path):
    res = run_module("loadtests.bench", "--out", tmp_path, "--quick", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    backends = {r["backend"] for r in result["raw"]}
    assert {"torch-eager", "ort-fp32", "ort-fp16", "ort-int8"} <= backends
    # the served figures are set against the service's own arrangement: two model instances
    assert "ort-fp32-x2" in backends and result["headline"]["raw_reference"] == "ort-fp32-x2"
    assert result["flops"]["best"] in ("ort-fp32", "ort-fp32-x2")
    assert {(r["protocol"], r["concurrency"]) for r in result["served"]} == {
        (p, c) for p in ("http", "grpc") for c in (1, 4, 16, 64)
    }
    assert all(r["errors"] == 0 for r in result["served"])
    assert result["flops"]["per_image"] > 1e8
    # the target figures come from interleaved rounds of raw and served measurements
    rounds, h = result["rounds"], result["headline"]
    assert len(rounds) == h["rounds"] >= 1 and all(r["errors"] == 0 for r in rounds)
    # bounds the measurement itself sets: the service cannot outrun its own model (a shed or
    # failed request counted as served would)
    assert 0 < h["served_over_raw"] <= 1.2, h
    for r in rounds:
        assert r["raw_best_images_per_s"] > r["http_saturation_images_per_s"] / 1.2 > 0, r
        # the overhead is the served wait minus the bare call, not the other way round; its
        # sign is the machine's noise at 1 user (a quick run measured -0.7 ms of 22 ms)
        served_minus_raw = r["http_p50_one_user_ms"] - r["raw_batch1_p50_ms"]
        assert r["http_overhead_ms"] == pytest.approx(served_minus_raw), r
        assert r["raw_batch1_p50_ms"] > 0 and r["http_p50_one_user_ms"] > 0, r
    lo, hi = h["http_overhead_ms_range"]
    assert lo <= h["http_overhead_ms"] <= hi, h
    for key in (
        "served_over_raw",
        "http_overhead_ms",
        "grpc_minus_http_ms",
        "ort_over_torch_at_16",
    ):
        assert key in result["headline"]
    assert (tmp_path / "raw-throughput.png").stat().st_size > 10_000
    assert (tmp_path / "served-latency.png").stat().st_size > 10_000
    assert "| served HTTP at saturation" in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize("recovery, words", [(3.700000000000003, "3.7 s"), (None, "none within")])
def test_overload_report_states_the_recovery_time_readably(tmp_path, recovery, words):
    """The committed report once printed `3.700000000000003 s`; no recovery at all must read
    as such, not as `None s`."""
    from loadtests.reliability import write_report

    figures = dict.fromkeys(
        ("capacity_req_per_s", "offered_req_per_s", "shed_ratio", "after_drop_ok_ratio"), 1.0
    )
    figures |= dict.fromkeys(("accepted_p50_ms", "accepted_p99_ms", "shed_p50_ms"), 1.0)
    figures |= {"shed_max_ms": 1.0, "requests": 10, "shed": 1, "accepted": 9, "other_errors": 0}
    figures["seconds"] = 60
    (tmp_path / "overload.json").write_text(json.dumps({**figures, "recovery_s": recovery}))
    write_report(tmp_path)
    line = next(
        row for row in (tmp_path / "reliability.md").read_text().splitlines() if "recovery" in row
    )
    assert words in line and "None" not in line and "0000" not in line


def test_each_reliability_run_says_where_and_when_it_was_measured(tmp_path):
    """Re-running one run rewrites the report: the others keep their own machine and date
    (a run from before the JSON recorded them says so) instead of taking today's."""
    from loadtests.reliability import write_report

    soak = {"seconds": 600, "users": 8, "requests": 10, "errors": 0, "req_per_s": 1.0}
    soak |= {"p99_ms": 1.0, "rss_mb_after_warmup": 1.0, "rss_mb_end": 1.0, "rss_growth_pct": 0}
    crash = {"workers": 1, "service": "slotserve", "killed_pid": 1, "new_pid": 2, "failed": 0}
    crash |= {"requests": 5, "failed_by_status": {}, "error_burst_s": 0.0, "ok_after_burst": 5}
    crash |= {"all_ok_after_burst": True, "restarted_after_s": 3.0}
    crash["measured_on"] = {"cpu": "Some CPU", "cores": 2, "date": "2026-01-02 03:04 UTC"}
    (tmp_path / "soak.json").write_text(json.dumps(soak))
    (tmp_path / "crash-1-worker.json").write_text(json.dumps(crash))
    write_report(tmp_path)
    text = (tmp_path / "reliability.md").read_text()
    assert "- measured on Some CPU (2 cores), 2026-01-02 03:04 UTC" in text
    assert "- measured on: not recorded in the run's JSON" in text
