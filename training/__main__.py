"""`python -m training VERB ...`: train, evaluate, sweep-codebook, name-codes.

Thin argument parsing over importable functions; see README for examples."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from training.config import DataConfig, InferenceOverrides


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (resumes an existing run)")
    p.add_argument(
        "--config", default="default", help="name under training/configs/ or a YAML path"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides, e.g. run.max_steps=100 model.modulation.enabled=false",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="start fresh even if the run has a checkpoint"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from training.config import load_train_config
    from training.train import train

    cfg = load_train_config(args.config, args.overrides)
    path = train(cfg, resume=not args.no_resume, progress=not args.no_progress)
    if path is None:  # another process of a data-parallel run: rank 0 reports
        return 0
    print(json.dumps({"checkpoint": str(path), "metrics": str(path.parent / "metrics.json")}))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="FG-ARI, mBO, mIoU and code statistics on labelled scenes")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a model.safetensors written by training")
    src.add_argument("--bundle", help="an exported model bundle, evaluated through onnxruntime")
    p.add_argument("--bundle-variant", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument(
        "--method",
        choices=["model", "colour", "kmeans", "kmeans-features"],
        default="model",
        help="colour / kmeans (RGB) / kmeans-features (frozen EfficientNet-Lite0 stride-32 "
        "features): the baselines on the same scenes",
    )
    p.add_argument(
        "--variant",
        choices=["solid", "textured", "photos", "photos-unseen"],
        default="solid",
        help="shapes scenes, or photo-object scenes of the training stamps / held-out stamps",
    )
    p.add_argument(
        "--coco", help="a COCO-format folder (annotations.json + images/) instead of shapes"
    )
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument(
        "--label-scenes",
        type=int,
        default=256,
        help="with a checkpoint that holds no code labels for the scenes' label set: labelled "
        "scenes to fit them on, and as many to pick their thresholds on",
    )
    p.add_argument(
        "--size", type=int, default=None, help="scene size (default: the model's input size)"
    )
    p.add_argument(
        "--width", type=int, default=None, help="scene width for photo scenes (default: --size)"
    )
    p.add_argument(
        "--slots", type=int, default=7, help="k for the kmeans baseline without a checkpoint"
    )
    InferenceOverrides.add_arguments(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    import torch

    from training.checkpoint import load_checkpoint
    from training.evaluate import (
        baseline_predictor,
        bundle_predictor,
        checkpoint_labels,
        coco_scenes,
        evaluate_scenes,
        evaluation_scenes,
        label_set_of,
        model_predictor,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    model = info = manifest = None
    if args.method == "model" and args.bundle:
        from runtime.contract import load_bundle

        manifest = load_bundle(args.bundle)
    elif args.method == "model":
        if not args.checkpoint:
            raise SystemExit("evaluate: --checkpoint or --bundle is required with --method model")
        overrides = InferenceOverrides.from_args(args)
        model, info = load_checkpoint(args.checkpoint, overrides=overrides)
    flags = {
        "--iterations": args.iterations,
        "--merge-share": args.merge_share,
        "--refine-radius": args.refine_radius,
        "--encoder-input": args.encoder_input,
        "--mask-attention": args.mask_attention,
    }
    given = [flag for flag, value in flags.items() if value is not None]
    if given and model is None:
        need = "needs" if len(given) == 1 else "need"
        raise SystemExit(f"evaluate: {', '.join(given)} {need} --checkpoint (a bundle's are fixed)")
    if manifest is not None:
        size, k, e = manifest.input.height, manifest.num_slots, manifest.codebook_size
        from runtime.contract import served_labels

        code_names = [label for label, _ in served_labels(manifest)]
    elif model is not None:
        size, k, e = (
            model.cfg.image_size,
            model.cfg.slot_attention.num_slots,
            model.cfg.codebook.size,
        )
        # Labels are judged as they would be served: the true rule, on the scenes' label set,
        # fitted again when inference settings differ from those the stored ones were fitted at.
        code_names = None
        if not args.coco:
            labels = checkpoint_labels(
                model, info, label_set_of(args.variant), args.label_scenes, refit=bool(overrides)
            )
            code_names = None if labels is None else [c.label for c in labels]
    else:
        size, k, e, code_names = 64, args.slots, None, None
    size = args.size or size
    if args.coco:
        scenes, class_names = coco_scenes(args.coco, size)
        source = {"coco": str(args.coco)}
    else:
        scenes, class_names = evaluation_scenes(
            args.variant, args.scenes, args.seed, size, args.width
        )
        source = {"variant": args.variant, "seed": args.seed, "size": [size, args.width or size]}
    if args.method == "model":
        if manifest is not None:
            predict = bundle_predictor(args.bundle, args.bundle_variant)
        else:
            predict = model_predictor(model)
        names = None if args.coco else code_names
        result = evaluate_scenes(predict, scenes, k, e, class_names, code_names=names)
    else:
        result = evaluate_scenes(baseline_predictor(args.method, k), scenes, k, None, class_names)
    if model is not None:
        result["iterations"] = model.grouping.num_iterations
        result["merge_share"] = model.cfg.decoder.merge_share
    result = {"method": args.method, **source, "scenes": len(scenes), **result}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep-codebook", help="train per codebook size; report perplexity/usage; recommend one"
    )
    p.add_argument("--config", default="default")
    p.add_argument("--sizes", default="8,16,32,64", help="comma-separated codebook sizes")
    p.add_argument("--out", default="runs/codebook-sweep")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from training.sweep import sweep_codebook

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report = sweep_codebook(args.config, sizes, Path(args.out), args.overrides)
    print(json.dumps(report, indent=2))
    return 0


def _add_name_codes(sub) -> None:
    p = sub.add_parser(
        "name-codes",
        help="(re)fit a checkpoint's code labels and majority names on labelled scenes",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--label-set",
        choices=("shapes", "photos"),
        default="shapes",
        help="labelled scenes to fit on (photos: the photo-object scenes of the training stamps)",
    )
    p.add_argument("--scenes", type=int, default=256, help="scenes (of each shapes variant)")
    p.add_argument("--seed", type=int, default=777)
    p.set_defaults(func=_cmd_name_codes)


def _cmd_name_codes(args) -> int:
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.evaluate import fit_model_labels, name_codes_on_shapes

    model, info = load_checkpoint(args.checkpoint)
    data = DataConfig(variant="photos") if args.label_set == "photos" else None
    info.code_names, info.code_usage = name_codes_on_shapes(model, args.scenes, args.seed, data)
    info.label_set = args.label_set
    info.code_labels = fit_model_labels(model, args.label_set, args.scenes)
    save_checkpoint(model, args.checkpoint, info)
    served = {str(i): c.label for i, c in enumerate(info.code_labels) if c.label is not None}
    names = {str(i): n for i, n in enumerate(info.code_names) if n is not None}
    print(json.dumps({"served_labels": served, "majority_names": names}))
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="evaluate a checkpoint beside the baselines and draw its masks")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--scenes", type=int, default=128)
    InferenceOverrides.add_arguments(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from training.demo import run_demo

    print(
        run_demo(args.checkpoint, Path(args.out), args.scenes, InferenceOverrides.from_args(args))
    )
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench-step", help="time training steps: fp32 against bf16 autocast")
    p.add_argument("--config", default="default")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from training.bench import bench_precision

    result = bench_precision(args.config, args.overrides, args.steps, args.threads, args.device)
    print(json.dumps(result, indent=2))
    return 0


def _add_scene(sub) -> None:
    p = sub.add_parser("scene", help="write generated scenes as PNG files (to send to the service)")
    p.add_argument("--out", type=Path, default=Path("scene.png"), help="file, or folder with -n")
    p.add_argument("-n", type=int, default=1, help="how many (more than 1: OUT is a folder)")
    p.add_argument("--variant", choices=["solid", "textured"], default="solid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.set_defaults(func=_cmd_scene)


def _cmd_scene(args) -> int:
    from PIL import Image

    from training.data.shapes import generate_batch

    scenes = generate_batch(args.n, seed=args.seed, variant=args.variant, size=args.size)
    if args.n == 1:
        paths = [args.out]
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        paths = [args.out / f"{args.variant}-{args.seed}-{i:04d}.png" for i in range(args.n)]
    for scene, path in zip(scenes, paths, strict=True):
        Image.fromarray(scene.image).save(path)
        print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)
    verbs = (_add_train, _add_evaluate, _add_sweep, _add_name_codes, _add_demo, _add_bench)
    for add in (*verbs, _add_scene):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        from training.runtime import ensure_fast_malloc

        ensure_fast_malloc(sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:  # BundleError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
