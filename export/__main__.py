"""`python -m export VERB ...`: onnx, verify. Thin argument parsing over export.*"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser(
        "onnx", help="export a checkpoint to an ONNX model bundle (runs the parity gate)"
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="bundle directory, e.g. models/NAME")
    p.add_argument("--name", default=None)
    p.add_argument("--version", default="1")
    p.add_argument("--mask-source", choices=["decoder_alpha", "attention"], default="decoder_alpha")

    p = sub.add_parser("verify", help="torch against onnxruntime at batch 1, 3, 32")
    p.add_argument("--bundle", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--json", action="store_true")

    args = parser.parse_args(argv)
    from export.contract import BundleError

    try:
        if args.verb == "onnx":
            from export.onnx_export import export_bundle

            manifest = export_bundle(
                args.checkpoint, args.out, args.name, args.version, args.mask_source
            )
            print(json.dumps({"bundle": args.out, "parity": manifest.parity}, indent=2))
        elif args.verb == "verify":
            from export.verify import parity_gate, verify_bundle

            report = verify_bundle(args.bundle, args.checkpoint)
            print(json.dumps(report, indent=None if args.json else 2))
            parity_gate(report)
    except (BundleError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
