"""The locust load tests (loadtests/): the answer check, the load shapes, the SLO verdict, and
headless locust runs against the real service (slow)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils


def _import_locust_unpatched() -> None:
    """Import locust without gevent's monkey.patch_all(): it would patch this pytest process
    (threads, sockets, subprocess) for every test after this one."""
    if "locust" in sys.modules:
        return
    saved = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        import locust  # noqa: F401
    finally:
        if saved is None:
            del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
        else:
            os.environ["LOCUST_SKIP_MONKEY_PATCH"] = saved


_import_locust_unpatched()

from loadtests import shapes  # noqa: E402
from loadtests.images import (  # noqa: E402
    TestImage,
    make_images,
    proto_to_result,
    rle_counts,
    validate,
    validate_batch,
)

REPO = Path(__file__).resolve().parents[1]
H, W = 6, 8


# -- validate -----------------------------------------------------------------------------------
def labels_map() -> np.ndarray:
    """A 6x8 slot map: background (slot 0), a box (slot 2) and a bar (slot 5)."""
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[1:4, 2:5] = 2
    labels[5, :] = 5
    return labels


def good_result(labels: np.ndarray | None = None) -> dict:
    """A correct answer for `labels`, built with pycocotools alone (not the service's code)."""
    labels = labels_map() if labels is None else labels
    objects = []
    for slot in np.unique(labels):
        rle = mask_utils.encode(np.asfortranarray((labels == slot).astype(np.uint8)))
        objects.append(
            {
                "slot": int(slot),
                "code": 3,
                "label": None,
                "label_score": 0.25,
                "code_distance": 0.5,
                "area": int((labels == slot).sum()),
                "bbox": [round(float(v)) for v in mask_utils.toBbox(rle)],
                "mask": {"size": [H, W], "counts": rle["counts"].decode()},
            }
        )
    return {
        "width": W,
        "height": H,
        "objects": objects,
        "model": {"name": "slotserve-shapes", "version": "1"},
        "timings_ms": {
            "decode": 0.1,
            "preprocess": 0.1,
            "inference": 10.0,
            "postprocess": 1.0,
            "total": 11.2,
        },
        "model_call": {"id": "1-1", "images": 2, "compute_ms": 9.0},
    }


def test_validate_passes_a_correct_answer():
    assert validate(good_result(), W, H) is None


def _overlapping() -> dict:
    result = good_result()
    whole = mask_utils.encode(np.asfortranarray(np.ones((H, W), dtype=np.uint8)))
    result["objects"].append(
        {
            **result["objects"][0],
            "slot": 7,
            "area": H * W,
            "bbox": [0, 0, W, H],
            "mask": {"size": [H, W], "counts": whole["counts"].decode()},
        }
    )
    return result


def _with(path: str, value):
    """good_result() with the field at dotted `path` set to `value` (DELETE: removed)."""
    result = good_result()
    *parents, last = path.split(".")
    node = result
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result


DELETE = object()


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (_with("width", W + 1), "size mismatch"),
        (_with("height", H - 1), "size mismatch"),
        (_with("objects", []), "no objects"),
        (_with("objects", DELETE), "no objects"),
        (_with("objects.1.mask.size", [W, H]), "RLE size"),
        (_with("objects.1.mask", DELETE), "no RLE mask"),
        (_with("objects.1.bbox", [6, 1, 3, 3]), "outside"),
        (_with("objects.1.bbox", [-1, 1, 3, 3]), "outside"),
        (_with("objects.1.bbox", [2, 1, 3]), "is not [x, y, w, h]"),
        (_with("objects.1.bbox", [2, 1, 3, 2]), "its mask's box"),
        (_with("objects.1.area", 5), "area"),
        (_with("objects.1.mask.counts", "!!not-rle"), "not a COCO RLE"),
        (_with("objects.1.mask.counts", "Z"), "not a COCO RLE"),
        (_with("objects.1.mask.counts", "0"), "runs cover 0 pixels"),
        (_with("objects.1.mask.counts", "`0"), "runs cover"),
        (_overlapping(), "overlap"),
        (_with("objects.2", None), "is not an object"),
        (_with("timings_ms", DELETE), "missing timings_ms"),
        (_with("timings_ms.total", DELETE), "timings"),
        (_with("timings_ms.inference", -1.0), "timings"),
        (_with("timings_ms.decode", "fast"), "timings"),
        (_with("model", DELETE), "model reference"),
        (_with("model_call", DELETE), "model_call"),
        (_with("model_call.images", 0), "model_call.images"),
        ([], "not a JSON object"),
        (None, "not a JSON object"),
    ],
)
def test_validate_catches_wrong_answers(result, words):
    reason = validate(result, W, H)
    assert reason, f"accepted a wrong answer: {result}"
    assert words in reason


def test_rle_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(6, 8), (64, 64), (96, 160)]:
        for density in (0.0, 0.02, 0.5, 1.0):
            mask = (rng.random(shape) < density).astype(np.uint8)
            rle = mask_utils.encode(np.asfortranarray(mask))
            runs = rle_counts(rle["counts"].decode())
            flat = np.concatenate(
                [np.full(n, i % 2, dtype=np.uint8) for i, n in enumerate(runs)] or [[]]
            )
            assert np.array_equal(flat, mask.ravel(order="F")), (shape, density)


def test_validate_catches_uncovered_pixels():
    result = good_result()
    del result["objects"][0]  # the background: its pixels belong to no object now
    reason = validate(result, W, H)
    assert reason and "uncovered" in reason


def test_validate_batch_checks_count_and_each_answer():
    images = [TestImage("a", b"", W, H, "PNG"), TestImage("b", b"", W, H, "PNG")]
    assert validate_batch([good_result(), good_result()], images) is None
    assert "1 results for 2 images" in validate_batch([good_result()], images)
    bad = good_result()
    bad["objects"] = []
    reason = validate_batch([good_result(), bad], images)
    assert reason.startswith("image 1 (b)") and "no objects" in reason
    assert validate_batch(None, images) == "no results list"


def test_proto_answers_convert_and_validate():
    from service.rpc.slotserve.v1 import slotserve_pb2 as pb

    result = good_result()
    msg = pb.Decomposition(
        width=result["width"],
        height=result["height"],
        objects=[
            pb.DetectedObject(**{**o, "mask": pb.Rle(**o["mask"])}) for o in result["objects"]
        ],
        model=pb.ModelRef(**result["model"]),
        timings_ms=pb.Timings(**result["timings_ms"]),
        model_call=pb.ModelCall(**result["model_call"]),
    )
    assert proto_to_result(msg) == result
    assert validate(proto_to_result(msg), W, H) is None
    msg.ClearField("timings_ms")
    assert "timings" in validate(proto_to_result(msg), W, H)
    msg.ClearField("objects")
    assert validate(proto_to_result(msg), W, H) == "no objects"


# -- the images ---------------------------------------------------------------------------------
def test_images_are_deterministic_and_varied():
    images = make_images(seed=3)
    assert [i.data for i in images] == [i.data for i in make_images(seed=3)]
    assert [i.data for i in images] != [i.data for i in make_images(seed=4)]
    formats = {i.format for i in images}
    assert {"PNG", "JPEG"} <= formats
    assert {(i.height, i.width) for i in images} >= {(64, 64), (128, 128), (96, 160)}
    assert len({i.name for i in images}) == len(images)
    for image in images:
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.format == image.format
        assert decoded.size == (image.width, image.height)
    assert len(make_images(seed=0, count=30)) == 30


# -- shapes -------------------------------------------------------------------------------------
def schedule(shape, times):
    return [shape.at(t) for t in times]


def test_ramp_schedule():
    ramp = shapes.RampShape(users=8, spawn_rate=4, duration=60, ramp=40)
    assert schedule(ramp, [0, 5, 10, 20, 39.9, 40, 59.9, 60, 100]) == [
        (1, 4.0),
        (1, 4.0),
        (2, 4.0),
        (4, 4.0),
        (8, 4.0),
        (8, 4.0),
        (8, 4.0),
        None,
        None,
    ]
    users = [ramp.at(t)[0] for t in np.arange(0, 60, 0.5)]
    assert users == sorted(users)  # never goes down
    default = shapes.RampShape(users=6, duration=30)  # ramp: 2/3 of the run
    assert default.at(10)[0] == 3 and default.at(20) == (6, 2.0)


def test_steady_schedule():
    steady = shapes.SteadyShape(users=5, spawn_rate=2.5, duration="1m")
    assert schedule(steady, [0, 30, 59.99, 60]) == [(5, 2.5), (5, 2.5), (5, 2.5), None]


def test_spike_schedule():
    spike = shapes.SpikeShape(users=12, spawn_rate=2, duration=30, spike_at=10, spike_length=5)
    assert schedule(spike, [0, 9.9, 10, 14.9, 15, 29.9, 30]) == [
        (3, 12.0),
        (3, 12.0),
        (12, 12.0),
        (12, 12.0),
        (3, 12.0),
        (3, 12.0),
        None,
    ]
    default = shapes.SpikeShape(users=8, base_users=2, duration=60)  # spike at 20 s for 10 s
    assert [default.at(t)[0] for t in (19, 20, 29, 30)] == [2, 8, 8, 2]


def test_tick_follows_run_time(monkeypatch):
    steady = shapes.SteadyShape(users=3, duration=10)
    monkeypatch.setattr(steady, "get_run_time", lambda: 4.0)
    assert steady.tick() == (3, 2.0)
    monkeypatch.setattr(steady, "get_run_time", lambda: 10.0)
    assert steady.tick() is None


def test_shape_parameters_from_options_then_environment(monkeypatch):
    monkeypatch.setenv("SLOTSERVE_LOAD_USERS", "9")
    monkeypatch.setenv("SLOTSERVE_LOAD_DURATION", "2m")
    monkeypatch.setenv("SLOTSERVE_LOAD_SPIKE_AT", "30s")
    params = shapes.params_from()
    assert (params.users, params.duration, params.spike_at, params.spawn_rate) == (
        9,
        120.0,
        30.0,
        2.0,
    )

    class Options:
        shape_users = "4"
        shape_duration = None
        shape_spawn_rate = "1.5"

    params = shapes.params_from(options=Options())
    assert (params.users, params.duration, params.spawn_rate) == (4, 120.0, 1.5)
    assert shapes.params_from(options=Options(), users=2).users == 2

    class Runner:
        class environment:
            parsed_options = Options()

    shape = shapes.SteadyShape()
    shape.runner = Runner()
    assert shape.tick() == (4, 1.5)


def test_shape_selection():
    assert shapes.shape_class("ramp") is shapes.RampShape
    assert shapes.shape_class(" Spike ") is shapes.SpikeShape
    assert shapes.shape_class("steady") is shapes.SteadyShape
    with pytest.raises(ValueError, match="unknown load shape"):
        shapes.shape_class("sawtooth")
    with pytest.raises(ValueError):
        shapes.Params(users=0)


# -- SLO verdict --------------------------------------------------------------------------------
def test_slo_verdict():
    from locust.stats import RequestStats

    from loadtests.locustfile import slo_verdict

    stats = RequestStats()
    assert slo_verdict(stats.total, 0.01, 2000) == "no requests were made"
    for _ in range(199):
        stats.log_request("grpc", "Decompose", 100, 1000)
    stats.log_request("POST", "/decompose", 3000, 1000)
    assert slo_verdict(stats.total, 0.01, 2000) is None
    assert "p95" in slo_verdict(stats.total, 0.01, 50)
    for _ in range(3):
        stats.log_error("grpc", "Decompose", "boom")
    verdict = slo_verdict(stats.total, 0.01, 2000)
    assert verdict.startswith("failure ratio 1.50% (3 of 200)")
    assert slo_verdict(stats.total, 0.02, 2000) is None


# -- headless runs against the real service -----------------------------------------------------
@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    from tests.serving import serve

    with serve(tmp_path_factory.mktemp("loadtest-server")) as server:
        yield server


def run_locust(server, csv_prefix: Path, *args: str, env=None, timeout: int = 180):
    """`locust -f loadtests/locustfile.py --headless ...` against `server`, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    if not (env or {}).get("SLOTSERVE_LOAD_SHAPE"):
        full_env.pop("SLOTSERVE_LOAD_SHAPE", None)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtests/locustfile.py",
        "--headless",
        "--only-summary",
        "--host",
        server.url,
        "--grpc-target",
        server.grpc_target,
        "--csv",
        str(csv_prefix),
        *args,
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    rows = []
    stats_csv = Path(f"{csv_prefix}_stats.csv")
    if stats_csv.exists():
        with open(stats_csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["Name"] != "Aggregated"]
    return proc.returncode, output, rows


def _by_type(rows) -> dict[str, tuple[int, int]]:
    """request type -> (requests, failures)."""
    totals: dict[str, tuple[int, int]] = {}
    for row in rows:
        n, f = totals.get(row["Type"], (0, 0))
        totals[row["Type"]] = (n + int(row["Request Count"]), f + int(row["Failure Count"]))
    return totals


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_headless_run_both_users_meets_slos(live_server, tmp_path):
    code, output, rows = run_locust(
        live_server, tmp_path / "run", "-u", "6", "-r", "3", "-t", "15s"
    )
    tail = output[-4000:] + "\n--- server ---\n" + live_server.log_tail(30)
    assert code == 0, tail
    assert "SLOs met" in output, tail
    by_type = _by_type(rows)
    assert set(by_type) == {"POST", "grpc"}, by_type
    for kind, (requests, failures) in by_type.items():
        assert requests > 0 and failures == 0, (kind, by_type, tail)
    names = {row["Name"] for row in rows}
    assert {"/decompose", "Decompose"} <= names, names
    failures_csv = (tmp_path / "run_failures.csv").read_text().splitlines()
    assert len(failures_csv) == 1, failures_csv  # the header only


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_impossible_slo_fails_the_run(live_server, tmp_path):
    code, output, rows = run_locust(
        live_server,
        tmp_path / "run",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "4s",
        "--slo-p95-ms",
        "1",
        "HttpDecomposeUser",
    )
    assert code == 1, output[-4000:]
    assert "SLO broken: p95" in output, output[-4000:]
    by_type = _by_type(rows)
    assert set(by_type) == {"POST"}, by_type  # the class picked on the command line only
    assert by_type["POST"][0] > 0 and by_type["POST"][1] == 0, by_type


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_steady_shape_with_grpc_user(live_server, tmp_path):
    env = {
        "SLOTSERVE_LOAD_SHAPE": "steady",
        "SLOTSERVE_LOAD_USERS": "2",
        "SLOTSERVE_LOAD_DURATION": "5",
    }
    code, output, rows = run_locust(
        live_server, tmp_path / "run", "--shape-spawn-rate", "2", "GrpcDecomposeUser", env=env
    )
    assert code == 0, output[-4000:]
    assert "Shape test updating to 2 users at 2.00 spawn rate" in output, output[-4000:]
    by_type = _by_type(rows)
    assert set(by_type) == {"grpc"}, by_type
    assert by_type["grpc"][0] > 0 and by_type["grpc"][1] == 0, by_type


def _locust_list(**extra_env: str) -> subprocess.CompletedProcess:
    """`locust --list` on the locustfile, in a subprocess that gevent may patch."""
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--list"],
        cwd=REPO,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_shape_is_refused(tmp_path):
    proc = _locust_list(SLOTSERVE_LOAD_SHAPE="sawtooth")
    assert proc.returncode != 0
    assert "unknown load shape 'sawtooth'" in proc.stdout + proc.stderr


def test_users_are_listed():
    proc = _locust_list()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HttpDecomposeUser" in proc.stdout and "GrpcDecomposeUser" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failed_requests_break_the_slo(tmp_path):
    """Nothing listening: every request of both users fails, and the failure-ratio SLO says so."""
    from types import SimpleNamespace

    from tests.serving import free_port

    port = free_port()
    nowhere = SimpleNamespace(url=f"http://127.0.0.1:{port}", grpc_target=f"127.0.0.1:{port}")
    code, output, rows = run_locust(nowhere, tmp_path / "run", "-u", "2", "-r", "2", "-t", "3s")
    assert code == 1, output[-4000:]
    assert "SLO broken: failure ratio 100.00%" in output, output[-4000:]
    by_type = _by_type(rows)
    assert set(by_type) == {"POST", "grpc"}, by_type
    for requests, failures in by_type.values():
        assert requests > 0 and failures == requests, by_type
    failures_csv = (tmp_path / "run_failures.csv").read_text()
    assert "UNAVAILABLE" in failures_csv and "no response" in failures_csv, failures_csv


def test_benchmark_batch_list_and_provider_are_checked_before_any_work():
    import argparse

    from loadtests.bench import batch_list, main

    assert batch_list("64,1, 16,16") == (1, 16, 64)
    for bad in ("4,16", "0,1,16", "1,x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            batch_list(bad)
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        # refused at once, one line, instead of a benchmark that quietly runs on the CPU
        with pytest.raises(SystemExit) as exit_:
            main(["--out", "unused", "--provider", "cuda"])
        assert exit_.value.code == 2


def test_nominal_cpu_peak_is_dropped_when_a_measured_sgemm_beats_it():
    from loadtests.bench import nominal_peak

    avx2 = "flags : fpu sse2 fma avx2\n"
    # 2 threads x 2,600 MHz x 32 FLOPs per cycle
    assert nominal_peak(2, 2600.0, avx2, sgemm=150.0) == pytest.approx(166.4)
    assert nominal_peak(2, 2600.0, "flags : fpu sse2\n", sgemm=50.0) == pytest.approx(83.2)
    # an AVX-512 CPU measured above the AVX2 figure: no percentage of a wrong peak
    assert nominal_peak(2, 2600.0, avx2, sgemm=243.0) is None
    assert nominal_peak(2, None, avx2, sgemm=150.0) is None


@pytest.mark.timeout(300)
def test_memory_benchmark_shows_what_the_memory_pattern_costs(tmp_path):
    """`python -m loadtests.memory`: one fresh process per point, and the figure behind the
    service's default: with onnxruntime's memory pattern on, the arena settles at about twice
    the activations of a batch (README "Memory")."""
    import json

    from tests.conftest import run_module

    args = ("--batches", "1,4", "--seconds", "0.2", "--threads", "1")
    res = run_module("loadtests.memory", "--out", tmp_path, *args, "--configs", "service,ort")
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "memory.json").read_text())
    # glibc's defaults, as in a container, even under `make test`'s MALLOC_* exports
    assert set(result["machine"]["malloc_env"].values()) == {None}
    assert {(p["batch"], p["config"]) for p in result["points"]} == {
        (1, "service"), (1, "ort"), (4, "service"), (4, "ort"),
    }  # fmt: skip
    for p in result["points"]:
        assert p["rss_mb_after"] >= p["rss_mb_loaded"] > p["rss_mb_before_load"] > 0
        assert p["calls"] >= 3 and p["images_per_s"] > 0
    slopes = result["summary"]["mb_per_image"]
    assert slopes["service"] > 5  # activations of 7 slots x 4,096 pixels x 64 channels
    assert slopes["ort"] > 1.5 * slopes["service"], slopes
    by_batch = {r["batch"]: r for r in result["summary"]["by_batch"]}
    assert by_batch[4]["memory_over_service"]["ort"] > 1.2
    assert (tmp_path / "memory.png").stat().st_size > 0
    assert "| 4 |" in (tmp_path / "memory.md").read_text()

    res = run_module("loadtests.memory", "--out", tmp_path, "--configs", "fast")
    assert res.returncode == 2 and "unknown ['fast']" in res.stderr


@pytest.mark.timeout(300)
def test_memory_benchmark_measures_two_model_instances(tmp_path):
    """`--configs service-x2`: the worker's default of two model instances under full load
    holds two sessions, each with the activations of its own call, so its memory grows about
    twice as fast with the batch as one session's (README "Memory")."""
    import json

    from tests.conftest import run_module

    args = ("--batches", "1,8", "--seconds", "0.2", "--threads", "2", "--configs")
    res = run_module("loadtests.memory", "--out", tmp_path, *args, "service,service-x2")
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "memory.json").read_text())
    instances = {p["config"]: p["instances"] for p in result["points"]}
    assert instances == {"service": 1, "service-x2": 2}
    slopes = result["summary"]["mb_per_image"]
    assert slopes["service-x2"] > 1.6 * slopes["service"], slopes
    assert (
        "service-x2 (memory arena on, memory pattern off, instances 2)"
        in (tmp_path / "memory.md").read_text()
    )


def test_bundles_benchmark_refuses_an_unknown_bundle_before_any_work(tmp_path):
    from loadtests.bundles import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path), "--bundles", "shapes,cats"])
    assert exit_.value.code == 2 and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_bundles_benchmark_serves_photographs_and_writes_its_report(tmp_path):
    import json

    from loadtests.bundles import main

    assert (
        main(["--out", str(tmp_path), "--bundles", "shapes", "--users", "1,2", "--seconds", "2"])
        == 0
    )
    result = json.loads((tmp_path / "bundles.json").read_text())
    rows = result["bundles"]["shapes"]
    assert [(r["instances"], r["users"]) for r in rows] == [(2, 1), (2, 2)]
    for r in rows:
        assert r["answered"] > 0 and r["errors"] == 0 and r["images_per_s"] > 0
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["memory_mb"] > 0
    assert "| shapes | 2 | 2 |" in (tmp_path / "bundles.md").read_text()
