"""Reliability runs against a real `bentoml serve`: overload, soak, crash.

    python -m loadtests.reliability overload --out reports/reliability   # 4x saturation, 1 min
    python -m loadtests.reliability soak --minutes 10 --out reports/reliability
    python -m loadtests.reliability crash --out reports/reliability     # kill -9 workers
    python -m loadtests.reliability all --out reports/reliability       # = make soak

Each run starts its own server, writes `<run>.json` and the figures into `reliability.md`.
overload  finds the saturating rate (closed loop, after a warm-up), then offers 4x that rate
          open-loop for a minute: shed ratio, p99 of accepted requests, how fast a refusal
          comes, and the time to recover once the load drops back under capacity.
soak      a steady load for N minutes: errors, and resident memory of the whole server
          (arbiter + workers) from the end of the first minute to the end.
crash     a steady load; kill -9 the serving worker (alone, then one of two): it is
          restarted, requests after the restart succeed, the error burst is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests.images import blocky_png, multipart
from loadtests.measure import cpu_name
from loadtests.server import Server, serve


def log(msg: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def images(n: int = 32) -> list[tuple[bytes, str]]:
    """Ready uploads, one image each: (multipart body, content type)."""
    return [multipart("image", [("s.png", blocky_png(seed), "image/png")]) for seed in range(n)]


@dataclass
class Outcome:
    t: float  # seconds since the run started, at the answer
    status: int  # HTTP status, 0 = transport error
    latency: float


@dataclass
class Recorder:
    start: float = field(default_factory=time.perf_counter)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, status: int, latency: float) -> None:
        self.outcomes.append(Outcome(time.perf_counter() - self.start, status, latency))

    def window(self, t0: float, t1: float) -> list[Outcome]:
        return [o for o in self.outcomes if t0 <= o.t < t1]


async def post(session, upload: tuple[bytes, str], rec: Recorder) -> None:
    """POST one ready upload (see `images`) to /decompose and record the outcome."""
    import aiohttp

    body, ctype = upload
    t = time.perf_counter()
    try:
        async with session.post("/decompose", data=body, headers={"Content-Type": ctype}) as r:
            await r.read()
            status = r.status
    except (TimeoutError, aiohttp.ClientError):
        status = 0
    rec.add(status, time.perf_counter() - t)


async def closed_loop(client, users: int, seconds: float, rec: Recorder, data) -> None:
    deadline = time.perf_counter() + seconds

    async def user(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            await post(client, data[i % len(data)], rec)
            i += users

    await asyncio.gather(*[user(k) for k in range(users)])


async def open_loop(client, rate: float, seconds: float, rec: Recorder, data) -> None:
    """Poisson-free constant-rate arrivals: requests start on schedule, answered or not."""
    tasks, n, started = [], 0, time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        due = int((now - started) * rate)
        while n < due:
            tasks.append(asyncio.create_task(post(client, data[n % len(data)], rec)))
            n += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)


def _client(server: Server, connections: int = 1024):
    """aiohttp: at hundreds of requests a second it is the Python client that keeps up."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(server.url, connector=connector, timeout=timeout)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# -- runs ----------------------------------------------------------------------------------------
async def _overload(server: Server, seconds: float) -> dict:
    data = images()
    async with _client(server) as client:
        # warm up first: a fresh worker's first calls at each batch size are slow, and a
        # capacity measured over them came out at half the real one (offering ~2x, not 4x)
        await closed_loop(client, 16, 10, Recorder(), data)
        probe = Recorder()
        await closed_loop(client, 16, 10, probe, data)
        capacity = sum(o.status == 200 for o in probe.outcomes) / 10
        log(f"saturating throughput {capacity:.1f} req/s; offering 4x for {seconds:.0f} s")
        rec = Recorder()
        await open_loop(client, 4 * capacity, seconds, rec, data)
        drop_at = time.perf_counter() - rec.start
        await open_loop(client, 0.25 * capacity, 20, rec, data)
    loaded = rec.window(0, drop_at)
    accepted = [o.latency for o in loaded if o.status == 200]
    shed = [o.latency for o in loaded if o.status == 503]
    other = [o.status for o in loaded if o.status not in (200, 503)]
    # recovery: from the drop, the first 1-s window in which everything succeeded
    recovered = None
    for k in range(0, 20 * 10):
        t0 = drop_at + k / 10
        win = rec.window(t0, t0 + 1)
        if win and all(o.status == 200 for o in rec.window(t0, drop_at + 20)):
            recovered = t0 - drop_at
            break
    return {
        "capacity_req_per_s": capacity,
        "offered_req_per_s": 4 * capacity,
        "seconds": seconds,
        "requests": len(loaded),
        "accepted": len(accepted),
        "shed": len(shed),
        "shed_ratio": len(shed) / max(1, len(loaded)),
        "other_errors": len(other),
        "accepted_p50_ms": 1e3 * (pct(accepted, 50) or 0),
        "accepted_p99_ms": 1e3 * (pct(accepted, 99) or 0),
        "shed_p50_ms": 1e3 * (pct(shed, 50) or 0),
        "shed_max_ms": 1e3 * (max(shed) if shed else 0),
        "recovery_s": recovered,
        "after_drop_ok_ratio": np.mean([o.status == 200 for o in rec.window(drop_at, 1e9)]),
    }


async def _soak(server: Server, seconds: float, users: int) -> dict:
    data = images()
    rec = Recorder()
    samples: list[tuple[float, int]] = []

    async def sample() -> None:
        while time.perf_counter() - rec.start < seconds:
            samples.append((time.perf_counter() - rec.start, server.rss_bytes()))
            await asyncio.sleep(2)

    async with _client(server) as client:
        await asyncio.gather(closed_loop(client, users, seconds, rec, data), sample())
    warm = min(60.0, seconds / 3)
    base = next(r for t, r in samples if t >= warm)
    end = samples[-1][1]
    ok = [o for o in rec.outcomes if o.status == 200]
    return {
        "seconds": seconds,
        "users": users,
        "requests": len(rec.outcomes),
        "errors": len(rec.outcomes) - len(ok),
        "req_per_s": len(ok) / seconds,
        "p99_ms": 1e3 * (pct([o.latency for o in ok], 99) or 0),
        "rss_mb_after_warmup": base / 2**20,
        "rss_mb_end": end / 2**20,
        "rss_growth_pct": 100 * (end - base) / base,
        "rss_samples_mb": [(round(t, 1), round(r / 2**20, 1)) for t, r in samples],
    }


def worker_pids(server: Server, service: str) -> list[int]:
    import psutil

    root = psutil.Process(server.proc.pid)
    pids = []
    for p in root.children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "--service-name" in cmd and cmd[cmd.index("--service-name") + 1] == service:
            pids.append(p.pid)
    if not pids:
        raise LookupError(f"no worker of {service}")
    return sorted(pids)


def worker_pid(server: Server, service: str) -> int:
    return worker_pids(server, service)[0]


async def _crash(
    server: Server, service: str, users: int, seconds: float = 40.0, workers: int = 1
) -> dict:
    data = images()
    rec = Recorder()
    before = worker_pid(server, service)
    info: dict = {"service": service, "workers": workers, "killed_pid": before}

    async def killer() -> None:
        await asyncio.sleep(5)
        info["killed_at_s"] = time.perf_counter() - rec.start
        os.kill(before, signal.SIGKILL)
        while True:  # wait for the replacement
            await asyncio.sleep(0.2)
            try:
                pids = worker_pids(server, service)
            except LookupError:
                continue
            if len(pids) == workers and before not in pids:
                pid = max(pids)
                info["new_pid"] = pid
                info["restarted_after_s"] = time.perf_counter() - rec.start - info["killed_at_s"]
                return

    async with _client(server) as client:
        await asyncio.gather(closed_loop(client, users, seconds, rec, data), killer())
    killed = info["killed_at_s"]
    failures = [o for o in rec.outcomes if o.status != 200]
    last_failure = max((o.t for o in failures), default=killed)
    after = rec.window(last_failure + 1e-6, 1e9)
    info.update(
        {
            "requests": len(rec.outcomes),
            "failed": len(failures),
            "failed_by_status": {
                str(s): sum(o.status == s for o in failures) for s in {o.status for o in failures}
            },
            "error_burst_s": last_failure - killed if failures else 0.0,
            "ok_after_burst": sum(o.status == 200 for o in after),
            "all_ok_after_burst": all(o.status == 200 for o in after) and len(after) > 0,
        }
    )
    return info


# -- report ---------------------------------------------------------------------------------------
def write_report(out: Path) -> None:
    def load(name: str):
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def measured(run: dict) -> str:
        where = run.get("measured_on")
        if where is None:  # runs written before the JSON recorded it
            return "- measured on: not recorded in the run's JSON"
        text = f"- measured on {where['cpu']} ({where['cores']} cores), {where['date']}"
        bundle = run.get("bundle")  # runs written before the JSON recorded it have none
        return text + (f", serving {bundle}" if bundle else "")

    lines = [
        "# Reliability",
        "",
        "Figures from `python -m loadtests.reliability` (see README); each run says where and "
        "when it was measured (`make soak` runs them all, a single run replaces its own). The "
        "load generator (Python, aiohttp) runs on the same cores as the server.",
    ]
    if (o := load("overload")) is not None:
        lines += [
            "",
            f"## Overload: 4x the saturating rate for {o['seconds']:.0f} s",
            "",
            measured(o),
            f"- saturating rate {o['capacity_req_per_s']:.1f} req/s; offered "
            f"{o['offered_req_per_s']:.1f} req/s, {o['requests']} requests",
            f"- shed with 503: {o['shed']} ({100 * o['shed_ratio']:.1f}%), answered in "
            f"{o['shed_p50_ms']:.0f} ms (median), {o['shed_max_ms']:.0f} ms at most",
            f"- accepted: {o['accepted']}, p50 {o['accepted_p50_ms']:.0f} ms, "
            f"p99 {o['accepted_p99_ms']:.0f} ms; other errors: {o['other_errors']}",
            "- recovery after the load dropped to 0.25x: "
            + ("none within 20 s" if o["recovery_s"] is None else f"{o['recovery_s']:.1f} s")
            + " "
            f"({100 * o['after_drop_ok_ratio']:.1f}% of requests after the drop succeeded)",
        ]
    if (s := load("soak")) is not None:
        lines += [
            "",
            f"## Soak: {s['seconds'] / 60:.0f} min, {s['users']} users",
            "",
            measured(s),
            f"- {s['requests']} requests, {s['errors']} errors, {s['req_per_s']:.1f} req/s, "
            f"p99 {s['p99_ms']:.0f} ms",
            f"- resident memory (server + workers): {s['rss_mb_after_warmup']:.0f} MB after "
            f"warm-up, {s['rss_mb_end']:.0f} MB at the end: {s['rss_growth_pct']:+.1f}%",
        ]
    for name in ("crash-1-worker", "crash-2-workers"):
        if (c := load(name)) is not None:
            lines += [
                "",
                f"## Crash: kill -9 one of {c['workers']} {c['service']} worker(s) under load",
                "",
                measured(c),
                f"- restarted after {c.get('restarted_after_s', float('nan')):.1f} s "
                f"(pid {c['killed_pid']} -> {c.get('new_pid')})",
                f"- error burst: {c['failed']} of {c['requests']} requests failed "
                f"({c['failed_by_status']}), over {c['error_burst_s']:.1f} s",
                f"- after the burst: {c['ok_after_burst']} requests, all succeeded: "
                f"{c['all_ok_after_burst']}",
            ]
    (out / "reliability.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.reliability", description=__doc__)
    parser.add_argument("run", choices=["overload", "soak", "crash", "all"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length")
    parser.add_argument("--overload-seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=8, help="steady load (soak, crash)")
    parser.add_argument("--crash-seconds", type=float, default=40.0, help="load per crash run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = ["overload", "soak", "crash"] if args.run == "all" else [args.run]
    plans = {
        "overload": [("overload", {})],
        "soak": [("soak", {})],
        # The front worker also runs the model (in-process batcher): kill it alone, then one
        # of two workers while the other goes on serving.
        "crash": [("crash-1-worker", {}), ("crash-2-workers", {"SLOTSERVE_WORKERS": "2"})],
    }
    for run in runs:
        results = {}
        for name, env in plans[run]:
            with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), env=env) as server:
                log(f"{name}: server up at {server.url}")
                bundle = server.bundle()
                if run == "overload":
                    results[name] = asyncio.run(_overload(server, args.overload_seconds))
                elif run == "soak":
                    results[name] = asyncio.run(_soak(server, 60 * args.minutes, args.users))
                else:
                    workers = int(env.get("SLOTSERVE_WORKERS", "1"))
                    results[name] = asyncio.run(
                        _crash(server, "slotserve", args.users, args.crash_seconds, workers)
                    )
                results[name]["bundle"] = bundle
        where = {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        for name, result in results.items():
            result["measured_on"] = where
            (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            log(f"{name}: {json.dumps({k: v for k, v in result.items() if 'samples' not in k})}")
    write_report(args.out)
    log(f"wrote {args.out / 'reliability.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
