"""Checkpoint -> ONNX bundle: fixed iterations unrolled, codebook and slot init baked in."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from export.graph import ExportWrapper, graph_report
from export.verify import parity_gate, verify_bundle
from runtime.contract import (
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_CODES,
    OUTPUT_DISTANCES,
    OUTPUT_MASKS,
    OUTPUT_NAMES,
    InputSpec,
    Manifest,
    OutputSpec,
    ServingSpec,
    sha256_file,
    write_manifest,
)
from training.checkpoint import load_checkpoint
from training.config import InferenceOverrides, ModelConfig

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def optimize_graph(model) -> None:
    """Fold constants and tidy an exported `onnx_ir.Model` in place, without pattern rewrites.

    This is onnxscript's default optimisation (what `ONNXProgram.optimize()` runs) less its
    rewrite rules. Their no-op rule `x + 0 -> x` matches any constant within 1e-8 of zero,
    so it deleted slot attention's `attn + 1e-8`: for a slot with almost no attention the
    weighted mean then divides by nearly zero, and the shipped bundle's masks moved 3.9e-4
    from PyTorch's on some scenes. onnxruntime applies its own (exact) fusions at load time.
    """
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants

    common.InlinePass()(model)
    for _ in range(2):
        fold_constants(model)
        common.RemoveUnusedNodesPass()(model)
    for tidy in (
        common.RemoveUnusedFunctionsPass(),
        common.RemoveUnusedOpsetsPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    ):
        tidy(model)


def export_graph(model: nn.Module, path: Path, mask_source: str, opset: int = 18) -> None:
    """torch.onnx.export with the dynamo exporter, a symbolic batch axis and weights inside."""
    size = model.cfg.image_size
    wrapper = ExportWrapper(model, mask_source)
    # An example batch of >= 2: a batch-1 example silently specialised the batch axis to 1.
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            external_data=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"image": {0: batch}},
            verbose=False,
            optimize=False,
        )
    optimize_graph(program.model)
    program.save(str(path), external_data=False)
    log.info("check: onnx checker, symbolic batch, no random ops, codebook baked in")
    check_graph(path, model)


def codebook_is_initializer(path: Path, codebook: np.ndarray) -> bool:
    from onnx import numpy_helper

    for init in onnx.load(str(path)).graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.shape == codebook.shape and np.allclose(arr, codebook):
            return True
    return False


def check_graph(path: Path, model: nn.Module) -> dict:
    onnx.checker.check_model(str(path), full_check=True)
    report = graph_report(path)
    if report["random_ops"]:
        raise RuntimeError(f"{path}: random ops in the exported graph: {report['random_ops']}")
    if not report["batch_symbolic"]:
        raise RuntimeError(
            f"{path}: the batch axis is static ({report['batch_dim']}), expected symbolic"
        )
    if report["inputs"] != [INPUT_NAME] or report["outputs"] != list(OUTPUT_NAMES):
        raise RuntimeError(
            f"{path}: tensor names {report['inputs']} -> {report['outputs']} break the contract"
        )
    if not codebook_is_initializer(path, model.codebook.embed.numpy()):
        raise RuntimeError(f"{path}: the codebook is not baked in as an initializer")
    return report


def masks_description(cfg: ModelConfig, mask_source: str) -> str:
    """What the bundle's masks output is, for the manifest: the path the model's masks take
    with these settings (the same words for the same path, whatever the model)."""
    d = cfg.decoder
    if mask_source == "attention":
        path = "the final slot attention, upsampled bilinearly"
    elif d.kind == "features":
        parts = ["the feature decoder's alphas on the token grid"]
        if d.mask_attention > 0:
            parts[0] += f" mixed with the final slot attention at a share of {d.mask_attention:g}"
        parts.append("upsampled bilinearly")
        if d.refine_radius > 0:
            parts.append(f"refined by a guided filter on the image (radius {d.refine_radius})")
        path = ", ".join(parts)
    else:
        path = "the decoder's alphas"
    text = f"per-slot mask probabilities ({path}), sum to 1 over slots"
    starts = cfg.slot_attention.eval_inits
    if starts > 1:
        text += f"; the slots of the best of {starts} starts (the features reconstructed best)"
    if d.merge_share > 0 and mask_source == "decoder_alpha":
        text += (
            f"; slots sharing their pixels above {d.merge_share} merged into one channel (the"
            " others 0)"
        )
    return text


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    name: str | None = None,
    version: str = "1",
    mask_source: str = "decoder_alpha",
    verify_batches: tuple[int, ...] = (1, 3, 32),
    overrides: InferenceOverrides | None = None,
    max_batch_size: int | None = None,
) -> Manifest:
    """Write `out/model.onnx` + `out/manifest.json`; run the parity gate (raises on failure).

    `overrides`: the inference settings baked into the graph (refinements unrolled, the
    share above which slots merge into one object, the radius of a feature decoder's mask
    refinement); those left None keep the checkpoint's. The manifest records them.
    `max_batch_size`: the most images per model call the service should make with this model
    (its activations per image times this must fit an instance); None leaves the service's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_checkpoint(checkpoint, overrides=overrides)
    cfg = model.cfg
    t = model.grouping.num_iterations  # eval mode: what inference runs, unrolled
    log.info("graph: torch.onnx (dynamo) from %s, %d refinements unrolled", checkpoint, t)
    export_graph(model, out / MODEL_FILE, mask_source)
    s = cfg.image_size
    manifest = Manifest(
        name=name or out.name,
        version=version,
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        model=cfg.model_dump(mode="json"),
        input=InputSpec(height=s, width=s),
        outputs=[
            OutputSpec(
                name=OUTPUT_MASKS,
                dtype="float32",
                shape=["batch", "slots", s, s],
                description=masks_description(cfg, mask_source),
            ),
            OutputSpec(
                name=OUTPUT_CODES,
                dtype="int64",
                shape=["batch", "slots"],
                description="semantic code (codebook index) per slot",
            ),
            OutputSpec(
                name=OUTPUT_DISTANCES,
                dtype="float32",
                shape=["batch", "slots"],
                description="Euclidean distance from the bottom-up slot to its code",
            ),
        ],
        iterations={"bottom_up": t, "modulated": t if cfg.modulation.enabled else 0},
        code_names=info.code_names,
        code_usage=info.code_usage,
        mask_source=mask_source,
        serving=ServingSpec(max_batch_size=max_batch_size),
        checkpoint_sha256=sha256_file(checkpoint),
        files={MODEL_FILE: sha256_file(out / MODEL_FILE)},
        tools=_versions(),
    )
    write_manifest(out, manifest)
    log.info("parity gate: onnxruntime against PyTorch at batch %s", verify_batches)
    report = verify_bundle(out, checkpoint, batches=verify_batches)
    parity_gate(report)  # a failed gate fails the export
    manifest.parity = report
    write_manifest(out, manifest)
    return manifest
