"""`python -m export VERB ...`: onnx, verify, variants, tensorrt, triton, bentoml.

Thin argument parsing over the export modules; see README "Export"."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from training.config import InferenceOverrides, positive_int

log = logging.getLogger("export")


def _int8_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", choices=["auto", "static", "dynamic"], default="auto")
    p.add_argument(
        "--int8-scope",
        choices=["decoder", "all"],  # export.variants.INT8_SCOPES
        default="decoder",
        help="modules quantised to int8 (decoder: 85%% of the FLOPs, after the codes)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("onnx", help="checkpoint -> ONNX bundle (parity gate, then fp16/int8)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="bundle directory, e.g. models/NAME")
    p.add_argument("--name", default=None)
    p.add_argument("--version", default="1")
    p.add_argument("--mask-source", choices=["decoder_alpha", "attention"], default="decoder_alpha")
    InferenceOverrides.add_arguments(p)  # --iterations, --merge-share, --refine-radius, ...
    p.add_argument(
        "--no-variants", action="store_true", help="skip model.fp16.onnx / model.int8.onnx"
    )
    p.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=None,
        help="the most images per model call the service makes with this bundle (its "
        "manifest's serving.max_batch_size; SLOTSERVE_MAX_BATCH_SIZE still wins): each image "
        "of a batch holds the model's activations (default: the service's, 32)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite a different bundle (or other files) at --out; without it the export "
        "refuses, and leaves an identical bundle as it is",
    )
    _int8_options(p)

    _label_options(p, "the set the checkpoint's codes were named on in training (photos after "
                   "`make train-photos`), else shapes")  # fmt: skip

    p = sub.add_parser(
        "labels", help="(re)name a bundle's codes on labelled scenes (the served `label`)"
    )
    p.add_argument("--bundle", required=True)
    _label_options(p, "the bundle's own label set, else shapes")

    p = sub.add_parser("verify", help="torch against onnxruntime at batch 1, 3, 32")
    p.add_argument("--bundle", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument(
        "--provider",
        choices=["cpu", "cuda", "tensorrt", "auto"],  # the backend's PROVIDERS + auto
        default="cpu",
        help="onnxruntime execution provider to check the bundle on (GPU ones need the gpu "
        "extra; their mask tolerance is 2e-3)",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("variants", help="(re)build model.fp16.onnx and model.int8.onnx")
    p.add_argument("--bundle", required=True)
    p.add_argument("--checkpoint", default=None, help="to keep the codebook lookup in float")
    _int8_options(p)
    p.add_argument("--scenes", type=int, default=256)

    p = sub.add_parser("tensorrt", help="build a TensorRT plan on this GPU (UNVERIFIED here)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--fp32", action="store_true", help="build an fp32 engine instead of fp16")
    p.add_argument("--cache-dir", default=None)

    p = sub.add_parser("triton", help="write a Triton Inference Server model repository")
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True, help="repository directory")
    p.add_argument("--name", default=None)
    p.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=None,
        help="the models' max_batch_size (default: the bundle manifest's serving."
        "max_batch_size, else 64)",
    )
    p.add_argument("--instances", type=int, default=1)
    p.add_argument(
        "--python-env",
        default=None,
        help="EXECUTION_ENV_PATH of the Python-backend model NAME_python: a conda-pack archive "
        "or an environment folder with numpy and onnxruntime ($$TRITON_MODEL_DIRECTORY/... is "
        "relative to the model's folder; default: the stub's own interpreter)",
    )

    p = sub.add_parser("bentoml", help="import the bundle into the BentoML model store")
    p.add_argument("--bundle", required=True)
    p.add_argument("--name", default=None)
    return parser


def _codebook(checkpoint):
    if not checkpoint:
        return None
    from training.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)[0].codebook.embed.numpy()


def _label_options(p, default: str) -> None:
    p.add_argument(
        "--label-set",
        choices=["shapes", "photos", "none"],
        default=None,
        help="labelled scenes the codes are named on (none: every label null, e.g. for a model "
        f"trained on your own unlabelled photos); default: {default}",
    )
    p.add_argument(
        "--label-scenes",
        type=positive_int,
        default=256,
        help="scenes in the naming set and again in the validation set",
    )


def trained_label_set(checkpoint) -> str:
    """The labelled set a checkpoint's codes were named on in training, else shapes (older
    checkpoints, like the shipped shapes model, record none)."""
    from training.checkpoint import read_info

    return read_info(checkpoint).label_set or "shapes"


def export_onnx(args) -> dict:
    """Build the bundle apart (`.NAME-*` beside --out), then move it to --out: never over a
    different bundle without --force, and an identical one is left as it is."""
    from export.bundle_dir import place, refuse_early, same_bundle
    from export.labels import label_bundle
    from export.onnx_export import export_bundle

    out = Path(args.out)
    refuse_early(out, args.checkpoint, args.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the bundle to --out
    try:
        manifest = export_bundle(
            args.checkpoint,
            staging,
            args.name or out.name,
            args.version,
            args.mask_source,
            overrides=InferenceOverrides.from_args(args),
            max_batch_size=args.max_batch_size,
        )
        label_set = args.label_set or trained_label_set(args.checkpoint)
        log.info(
            "labels: naming the codes on %d + %d %s scenes",
            *[args.label_scenes] * 2,
            label_set,
        )
        manifest = label_bundle(staging, label_set, args.label_scenes)
        result = {
            "bundle": str(out),
            "parity": manifest.parity,
            "label_thresholds": manifest.label_thresholds,
        }
        if same_bundle(out, staging):
            log.info("%s already holds this bundle: left as it is", out)
            return {**result, "unchanged": True}
        if out.exists() and any(out.iterdir()) and not args.force:
            place(staging, out, force=False)  # refuses, before the variants' minutes
        if not args.no_variants:
            from export.variants import build_variants

            log.info("variants: fp16, then int8 (quantise, calibrate, measure each)")
            result["variants"] = build_variants(
                staging,
                args.int8,
                codebook=_codebook(args.checkpoint),
                int8_scope=args.int8_scope,
            )
        place(staging, out, args.force)
        log.info("wrote %s", out)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(args) -> object:
    if args.verb == "onnx":
        return export_onnx(args)
    if args.verb == "labels":
        from export.labels import label_bundle
        from runtime.contract import load_bundle

        label_set = args.label_set or load_bundle(args.bundle).label_set or "shapes"
        manifest = label_bundle(args.bundle, label_set, args.label_scenes)
        given = [c.label for c in manifest.code_labels or [] if c.label]
        return {
            "bundle": args.bundle,
            "label_set": label_set,
            "label_thresholds": manifest.label_thresholds,
            "codes_labelled": len(given),
            "labels": sorted(set(given)),
        }
    if args.verb == "verify":
        from export.verify import parity_gate, verify_bundle

        report = verify_bundle(args.bundle, args.checkpoint, provider=args.provider)
        print(json.dumps(report, indent=None if args.json else 2))
        parity_gate(report)
        return None
    if args.verb == "variants":
        from export.variants import build_variants

        return build_variants(
            args.bundle,
            args.int8,
            args.scenes,
            codebook=_codebook(args.checkpoint),
            int8_scope=args.int8_scope,
        )
    if args.verb == "tensorrt":
        from export.tensorrt import build_bundle_engine
        from runtime.trt_options import BatchProfile

        profile = BatchProfile(args.min_batch, args.opt_batch, args.max_batch)
        return {
            "plan": str(build_bundle_engine(args.bundle, profile, not args.fp32, args.cache_dir))
        }
    if args.verb == "triton":
        from export.triton import write_python_model, write_triton_repo
        from runtime.contract import read_manifest

        limit = args.max_batch_size or read_manifest(args.bundle).serving.max_batch_size or 64
        batching = {"max_batch_size": limit, "instances": args.instances}
        configs = write_triton_repo(args.bundle, args.out, args.name, **batching)
        configs.append(
            write_python_model(args.bundle, args.out, args.name, args.python_env, **batching)
        )
        return {"configs": [str(c) for c in configs]}
    if args.verb == "bentoml":
        from export.bento import import_bundle

        return {"tag": import_bundle(args.bundle, args.name)}
    raise AssertionError(args.verb)


def quiet_libraries() -> None:
    """Our progress (the `export` loggers) at INFO, one line per stage; the libraries' own
    INFO chatter (onnxscript's optimiser and rewriter, torch.onnx: about 55 KB per export)
    and torchvision's import-time warnings stay out."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    progress = logging.StreamHandler()
    progress.setFormatter(logging.Formatter("export: %(message)s"))
    ours = logging.getLogger("export")
    ours.setLevel(logging.INFO)
    ours.addHandler(progress)
    ours.propagate = False
    warnings.filterwarnings("ignore", module=r"torchvision(\..*)?")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx(\..*)?")


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = _parser().parse_args(argv)
    from runtime.contract import BundleError

    try:
        result = run(args)
    except (BundleError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
