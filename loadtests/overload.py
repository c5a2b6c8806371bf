"""Goodput under overload: what the service still answers when clients push too hard.

    python -m loadtests.overload --out reports/overload             # ~6 min on 2 cores
    python -m loadtests.overload --out runs/overload --quick        # ~2 min

In one run, against `bentoml serve` started here, over HTTP and over gRPC:

1. saturating throughput: the best goodput of closed-loop users at each `--sat-users` count
   (as many requests as the model's batches take, inside the latency budget); nothing should
   be shed there;
2. closed loop past the budget: users = 1.3 x saturating throughput x budget (the most
   requests that fit the budget, and 30% more), for clients that resend at once and for
   clients that honour Retry-After;
3. open loop at 4x the saturating rate (Poisson arrivals), each request sent again when
   refused (at once, or after Retry-After) until answered or its patience runs out.

Goodput: answered images per second inside each window, against the saturating throughput
of the same protocol measured just before it (and against the first saturation figure).
Also the answered requests' p50 / p99 against the budget, refusals (client-side, and the
service's own count), errors, and where the cores went: CPU used by the service's processes
and by the clients in this process, in cores. The clients run on the same cores as the
service, so every refusal costs the model twice (answering it, and sending it again); on a
shared machine the figures are noisy.

Writes overload.json, overload.md and overload.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtests import clients
from loadtests.measure import encoded, log, machine, percentile
from loadtests.server import Server, serve
from service.batcher import PLANNED_SHARE
from service.settings import Settings

PROTOCOLS = ("http", "grpc")
GOAL = 0.9
"""Goodput under overload as a share of saturating throughput (issue 28)."""


@dataclass
class Cores:
    """CPU used during one point, in cores: the service's processes and this process (the
    clients)."""

    server: float
    client: float


@contextmanager
def cpu_used(server: Server, seconds: float):
    """Measure the CPU the service and this process use over the first `seconds` of the
    block, the window whose answers count as goodput (an open loop goes on after it until
    its last requests are answered or give up). Yields `Cores`, filled in by the end."""
    me = psutil.Process()
    used = Cores(0.0, 0.0)

    def snapshot() -> tuple[float, float, float]:
        own = me.cpu_times()  # this process, all threads: the clients' event loop
        return time.perf_counter(), server.cpu_seconds(), own.user + own.system

    start = snapshot()
    end: list[tuple[float, float, float]] = []
    timer = threading.Timer(seconds, lambda: end.append(snapshot()))
    timer.start()
    try:
        yield used
    finally:
        timer.cancel()
        stop = end[0] if end else snapshot()  # a block shorter than the window
        wall = stop[0] - start[0]
        used.server = (stop[1] - start[1]) / wall
        used.client = (stop[2] - start[2]) / wall


def row(
    kind: str,
    protocol: str,
    retry: str,
    load: float,
    r: clients.LoadResult,
    server_shed: float,
    cores: Cores,
):
    return {
        "kind": kind,
        "protocol": protocol,
        "retry": retry,
        "load": load,
        "goodput": r.goodput,
        "answered": r.answered,
        "p50_ms": 1e3 * percentile(r.latencies, 50),
        "p99_ms": 1e3 * percentile(r.latencies, 99),
        "end_to_end_p99_ms": 1e3 * percentile(r.end_to_end, 99),
        "shed": r.shed,
        "service_shed": server_shed,
        "errors": r.errors,
        "given_up": r.given_up,
        "server_cores": cores.server,
        "client_cores": cores.client,
    }


def shed_count(server: Server) -> float:
    return server.metric_value("slotserve_errors_total", reason="overloaded")


def measure(server: Server, args, images: list[bytes]) -> dict:
    """Saturation first (sizing the overload), then each overload point right after a fresh
    saturation reference of the same length: a machine whose speed drifts (other work on
    it) moves both sides of each ratio."""
    budget_s = args.budget_ms / 1000
    rows, saturation = [], {}

    def saturating(protocol: str, users: int) -> dict:
        before = shed_count(server)
        with cpu_used(server, args.seconds) as cores:
            r = asyncio.run(clients.closed_loop(server, protocol, users, args.seconds, images))
        shed = shed_count(server) - before
        point = row("saturation", protocol, "at-once", users, r, shed, cores)
        log(f"{protocol} x{users}: {r.goodput:.1f} img/s, shed {r.shed}")
        time.sleep(args.pause)
        return point

    for protocol in PROTOCOLS:
        asyncio.run(clients.closed_loop(server, protocol, 2, 2.0, images))  # warm connections
        points = [saturating(protocol, n) for n in args.sat_users]
        rows += points
        best = max(points, key=lambda p: p["goodput"])
        sat, sat_users = best["goodput"], best["load"]
        saturation[protocol] = {"images_per_s": sat, "users": sat_users}
        users = math.ceil(args.closed_factor * sat * budget_s)
        rate = args.open_factor * sat
        for retry in clients.RETRY_MODES:
            for kind in ("closed", "open"):
                reference = saturating(protocol, sat_users)
                rows.append({**reference, "kind": "reference"})
                before = shed_count(server)
                if kind == "closed":
                    run = clients.closed_loop(server, protocol, users, args.seconds, images, retry)
                else:
                    run = clients.open_loop(
                        server, protocol, rate, args.seconds, images, retry, args.patience
                    )
                with cpu_used(server, args.seconds) as cores:
                    r = asyncio.run(run)
                load = users if kind == "closed" else rate
                shed = shed_count(server) - before
                point = row(kind, protocol, retry, load, r, shed, cores)
                point["reference"] = reference["goodput"]
                rows.append(point)
                log(
                    f"{protocol} {kind} {load:.0f} {retry}: {r.goodput:.1f} img/s, "
                    f"{r.goodput / reference['goodput']:.2f} of the saturation just before"
                )
                time.sleep(args.pause)
    for r in rows:
        sat = saturation[r["protocol"]]["images_per_s"]
        r["of_saturation"] = r["goodput"] / r.get("reference", sat)
        r["of_first_saturation"] = r["goodput"] / sat
        r["p99_within_budget"] = r["p99_ms"] <= args.budget_ms
    return {"saturation": saturation, "rows": rows}


def write_markdown(path: Path, result: dict) -> None:
    s = result["settings"]
    lines = [
        "# Goodput under overload",
        "",
        f"Run {result['started']} on {result['machine']['cpu']} ({result['machine']['cores']}"
        f" cores), `python -m loadtests.overload` ({'quick' if s['quick'] else 'full'}): "
        f"{s['seconds']:g} s per point, latency budget {s['budget_ms']} ms, refusals held "
        f"{s['shed_hold_ms']} ms. Closed loop: {s['closed_factor']:g} x saturating throughput"
        f" x budget users; open loop: {s['open_factor']:g} x the saturating rate, patience "
        f"{s['patience']:g} s. The clients (one process for all users) share the service's "
        "cores: `service` and `clients` are the CPU each used, in cores.",
        "",
        "| protocol | load | clients | goodput img/s | of saturation just before | of first "
        "saturation | p50 ms | p99 ms | end-to-end p99 ms | refused | service shed | errors | "
        "gave up | service cores | clients cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["kind"] == "reference":
            continue
        load = (
            f"{r['load']:.0f} req/s open"
            if r["kind"] == "open"
            else f"{r['load']} users" + (" (saturation)" if r["kind"] == "saturation" else "")
        )
        lines.append(
            f"| {r['protocol']} | {load} | {r['retry']} | {r['goodput']:.1f} | "
            f"{r['of_saturation']:.2f} | {r['of_first_saturation']:.2f} | "
            f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['end_to_end_p99_ms']:.0f} | {r['shed']} | {r['service_shed']:.0f} | "
            f"{r['errors']} | {r['given_up']} | {r.get('server_cores', float('nan')):.2f} | "
            f"{r.get('client_cores', float('nan')):.2f} |"
        )
    over = [r for r in result["rows"] if r["kind"] in ("closed", "open")]
    held = [r for r in over if r["of_saturation"] >= GOAL]
    in_budget = [r for r in over if r["p99_within_budget"]]
    # a closed loop of n users keeps n requests in flight: they fit the budget when n is
    # at most the goodput times the share of the budget the queue plans for
    fitting = [
        r
        for r in result["rows"]
        if r["kind"] in ("saturation", "reference")
        and r["load"] <= r["goodput"] * PLANNED_SHARE * s["budget_ms"] / 1000
    ]
    sat_shed = sum(r["service_shed"] for r in fitting)
    lines += [
        "",
        f"Goodput >= {GOAL} x saturating throughput in {len(held)} of {len(over)} overload "
        f"points; accepted p99 within the budget in {len(in_budget)} of {len(over)}; "
        f"requests shed at the {len(fitting)} saturation points whose users fit the budget "
        f"(users <= goodput x {PLANNED_SHARE} x budget): {sat_shed:.0f}.",
        "",
        "Refusals are decided before the body is read (HTTP: the admission gate asks the "
        "batcher in front of BentoML's own middleware; gRPC: before decoding) and held "
        "before they are sent, so clients that resend at once cannot turn them into a loop "
        "that takes the model's cores. The HTTP clients are keep-alive connections parsed "
        "with httptools; the gRPC clients are grpc.aio stubs.",
        "",
    ]
    path.write_text("\n".join(lines))


def plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    over = [r for r in result["rows"] if r["kind"] in ("closed", "open")]
    labels = [f"{r['protocol']}\n{r['kind']}\n{r['retry']}" for r in over]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(range(len(over)), [r["of_saturation"] for r in over], color="#4c72b0")
    ax.axhline(GOAL, color="#c44e52", ls="--", lw=1, label=f"goal {GOAL}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(over)), labels, fontsize=7)
    ax.set(ylabel="goodput / saturation just before", title="Goodput under overload")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.overload", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="short points (8 s)")
    parser.add_argument("--seconds", type=float, default=None, help="per point (default 20)")
    parser.add_argument("--budget-ms", type=int, default=2000, help="SLOTSERVE_MAX_LATENCY_MS")
    parser.add_argument(
        "--shed-hold-ms", type=int, default=None, help="SLOTSERVE_SHED_HOLD_MS (the budget)"
    )
    parser.add_argument(
        "--sat-users",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[8, 16],
        help="closed-loop user counts whose best goodput is the saturating throughput (8,16)",
    )
    parser.add_argument("--closed-factor", type=float, default=1.3)
    parser.add_argument("--open-factor", type=float, default=4.0)
    parser.add_argument("--patience", type=float, default=4.0, help="open-loop client, seconds")
    args = parser.parse_args(argv)
    if args.shed_hold_ms is None:  # the service's default: one budget (Settings.shed_hold)
        args.shed_hold_ms = Settings(max_latency_ms=args.budget_ms).shed_hold
    if args.budget_ms < 1 or args.shed_hold_ms < 0 or min(args.sat_users) < 1:
        parser.error("--budget-ms and --sat-users must be >= 1, --shed-hold-ms >= 0")
    args.seconds = args.seconds or (8.0 if args.quick else 20.0)
    args.pause = 1.0 if args.quick else 3.0  # let the queue drain between points
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    env = {
        "SLOTSERVE_MAX_LATENCY_MS": str(args.budget_ms),
        "SLOTSERVE_SHED_HOLD_MS": str(args.shed_hold_ms),
    }
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), env=env) as server:
        measured = measure(server, args, encoded(32))
    result = {
        "started": started,
        "machine": machine(),
        "settings": {
            "quick": args.quick,
            "seconds": args.seconds,
            "budget_ms": args.budget_ms,
            "shed_hold_ms": args.shed_hold_ms,
            "sat_users": args.sat_users,
            "closed_factor": args.closed_factor,
            "open_factor": args.open_factor,
            "patience": args.patience,
        },
        **measured,
    }
    (args.out / "overload.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "overload.md", result)
    plot(args.out / "overload.png", result)
    log(f"wrote {args.out}/overload.json, overload.md, overload.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
