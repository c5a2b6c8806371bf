"""Two ONNX graphs of the shipped bundle, raw onnxruntime fp32, in ONE run: images/s at each
batch (interleaved rounds, the median per batch), the FLOPs each graph's PyTorch form counts
per image, the measured SGEMM, and the achieved GFLOP/s at each graph's best batch as a share
of it (the figure `loadtests/bench.py` reports).

    python -m loadtests.utilisation --baseline OLD.onnx --out reports/flops

The baseline is an older export of the same checkpoint (e.g. `git show REV:models/...`); its
FLOPs are counted on the reference decoder path (`MLPBroadcastDecoder.cpu_shaped = False`),
the current graph's on the path it exports. Both graphs run with the service's own backend
and session options (`OnnxRuntimeBackend`, as bench.py's raw runners).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from loadtests.bench import batch_list, cpu_peak, flops_per_image
from loadtests.measure import BUNDLE, log, machine, scenes, time_calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.utilisation", description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="older model.onnx")
    parser.add_argument("--graph", type=Path, default=BUNDLE / "model.onnx")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=batch_list, default=(1, 4, 16))
    parser.add_argument("--seconds", type=float, default=1.0, help="per batch, graph and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.contract import load_bundle, to_model_input

    manifest = load_bundle(BUNDLE)
    graphs = {"baseline": args.baseline, "current": args.graph}
    backends = {
        name: OnnxRuntimeBackend(path, manifest, "fp32", "cpu", args.threads)
        for name, path in graphs.items()
    }
    images = scenes(max(args.batches))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rates: dict[str, dict[int, list[float]]] = {n: {b: [] for b in args.batches} for n in graphs}
    for r in range(args.rounds):
        for b in args.batches:
            for name, backend in backends.items():
                # as bench.py's raw runners: uint8 images in, the input conversion timed too
                def run(imgs, backend=backend):
                    backend.infer(to_model_input(imgs, manifest.input))

                times = time_calls(run, images[:b], args.seconds)
                rates[name][b].append(b / statistics.fmean(times))
                log(f"round {r + 1}/{args.rounds} {name} batch {b}: {rates[name][b][-1]:.1f} img/s")
    peak = cpu_peak(args.threads)
    flops = {"baseline": flops_per_image(False), "current": flops_per_image(True)}
    rows = {}
    for name in graphs:
        medians = {b: statistics.median(v) for b, v in rates[name].items()}
        best = max(medians, key=medians.get)
        achieved = flops[name] * medians[best] / 1e9
        rows[name] = {
            "graph": str(graphs[name]),
            "flops_per_image": flops[name],
            "images_per_s": medians,
            "images_per_s_rounds": rates[name],
            "best_batch": best,
            "achieved_gflops": achieved,
            "of_sgemm": achieved / peak["sgemm_gflops"],
        }
    base, cur = rows["baseline"], rows["current"]
    result = {
        "machine": machine("cpu"),
        "started": started,
        "threads": args.threads,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "sgemm_gflops": peak["sgemm_gflops"],
        "graphs": rows,
        "speedup_at_best": cur["images_per_s"][cur["best_batch"]]
        / base["images_per_s"][base["best_batch"]],
        # the current graph's images/s at its best batch valued at the baseline's FLOPs/image:
        # the rate of the reference model's work, not of the work the graph does
        "current_at_reference_flops_of_sgemm": base["flops_per_image"]
        * cur["images_per_s"][cur["best_batch"]]
        / 1e9
        / peak["sgemm_gflops"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "utilisation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Measured {started}, {args.threads} threads, {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per batch and graph; SGEMM {peak['sgemm_gflops']:.0f} GFLOP/s.",
        "",
        "| graph | GFLOP/image | "
        + " | ".join(f"img/s b{b}" for b in args.batches)
        + " | best batch | GFLOP/s | of SGEMM |",
        "|---|---|" + "---|" * len(args.batches) + "---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['flops_per_image'] / 1e9:.3f} | "
            + " | ".join(f"{row['images_per_s'][b]:.1f}" for b in args.batches)
            + f" | {row['best_batch']} | {row['achieved_gflops']:.1f} | "
            f"{100 * row['of_sgemm']:.0f}% |"
        )
    lines += [
        "",
        f"Speed-up at the best batch: {result['speedup_at_best']:.2f}x. The current graph's "
        f"images/s valued at the baseline's FLOPs per image: "
        f"{100 * result['current_at_reference_flops_of_sgemm']:.0f}% of SGEMM.",
        "",
    ]
    (args.out / "utilisation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
