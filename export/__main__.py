"""`python -m export VERB ...`: onnx, verify, variants, tensorrt, triton, bentoml.

Thin argument parsing over the export modules; see README "Export"."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from training.config import InferenceOverrides


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
    InferenceOverrides.add_arguments(p)  # --iterations (unrolled in the graph), --merge-share
    p.add_argument(
        "--no-variants", action="store_true", help="skip model.fp16.onnx / model.int8.onnx"
    )
    _int8_options(p)

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
    p.add_argument("--max-batch-size", type=int, default=64)
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


def run(args) -> object:
    if args.verb == "onnx":
        from export.onnx_export import export_bundle

        manifest = export_bundle(
            args.checkpoint,
            args.out,
            args.name,
            args.version,
            args.mask_source,
            eval_iterations=args.iterations,
            merge_share=args.merge_share,
        )
        result = {"bundle": args.out, "parity": manifest.parity}
        if not args.no_variants:
            from export.variants import build_variants

            result["variants"] = build_variants(
                args.out,
                args.int8,
                codebook=_codebook(args.checkpoint),
                int8_scope=args.int8_scope,
            )
        return result
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
        from export.tensorrt import BatchProfile, build_bundle_engine

        profile = BatchProfile(args.min_batch, args.opt_batch, args.max_batch)
        return {
            "plan": str(build_bundle_engine(args.bundle, profile, not args.fp32, args.cache_dir))
        }
    if args.verb == "triton":
        from export.triton import write_python_model, write_triton_repo

        batching = {"max_batch_size": args.max_batch_size, "instances": args.instances}
        configs = write_triton_repo(args.bundle, args.out, args.name, **batching)
        configs.append(
            write_python_model(args.bundle, args.out, args.name, args.python_env, **batching)
        )
        return {"configs": [str(c) for c in configs]}
    if args.verb == "bentoml":
        from export.bento import import_bundle

        return {"tag": import_bundle(args.bundle, args.name)}
    raise AssertionError(args.verb)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from export.contract import BundleError

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
