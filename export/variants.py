"""fp16 and int8 variants of a bundle's fp32 graph, each measured against fp32 in one run.

fp16: weights and activations in half precision with float32 inputs/outputs kept, so the
contract does not change (also the input TensorRT 11's strongly typed builder wants).
int8: onnxruntime quantization, dynamic (weights int8, activations quantised on the fly) and
static (QDQ, activations calibrated on generated scenes); both are measured and the better
one that passes the gate (code agreement >= 99%, FG-ARI within 0.01 of fp32) is kept.

What is quantised is a scope of the model's modules, found through the module path the
exporter records on every node. The default scope is the spatial-broadcast decoder: it holds
85% of the FLOPs, and the codes are chosen before it, so int8 there cannot flip a code.
Quantising the whole graph (scope `all`, measured beside it) moves the slots enough to flip
40% of the shipped model's codes and costs 0.26 FG-ARI."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from export.verify import ort_session
from runtime.contract import (
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_NAMES,
    VARIANT_FILES,
    InputSpec,
    load_bundle,
    sha256_file,
    to_model_input,
    write_manifest,
)

log = logging.getLogger(__name__)

MIN_CODE_AGREEMENT = 0.99
MAX_FG_ARI_CHANGE = 0.01
INT8_SCOPES = {"decoder": ("model.decoder.",), "all": ()}
QUANTISABLE_OPS = ("MatMul", "Gemm", "Conv")


def make_fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


class _Calibration:
    """onnxruntime CalibrationDataReader over generated scenes of both variants."""

    def __init__(self, images: np.ndarray, spec: InputSpec, batch: int = 16):
        self.batches = [
            to_model_input(images[i : i + batch], spec) for i in range(0, len(images), batch)
        ]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {INPUT_NAME: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def codebook_nodes(model: onnx.ModelProto, codebook: np.ndarray | None) -> list[str]:
    """Nodes that read the codebook (directly or through a Transpose/Cast): left in float,
    because quantising the slot-to-code distances flips codes that are nearly tied."""
    from onnx import numpy_helper

    if codebook is None:
        return []
    names = {
        i.name
        for i in model.graph.initializer
        if tuple(i.dims) == codebook.shape and np.allclose(numpy_helper.to_array(i), codebook)
    }
    nodes, frontier = [], set(names)
    for node in model.graph.node:  # graph nodes are topologically sorted
        if frontier & set(node.input):
            nodes.append(node.name)
            if node.op_type in ("Transpose", "Cast", "Reshape", "Unsqueeze"):
                frontier |= set(node.output)
    return nodes


def shared_weight_gemms(model: onnx.ModelProto) -> list[str]:
    """Gemm nodes whose weight initializer is shared with another node (the unrolled GRU and
    slot-attention iterations reuse one weight). onnxruntime's dynamic quantiser transposes
    such a shared weight once per use and then fails to load (MatMulInteger shape error), so
    these nodes stay float."""
    inits = {i.name for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                uses[name] = uses.get(name, 0) + 1
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Gemm" and any(uses.get(i, 0) > 1 for i in n.input[1:2])
    ]


def module_path(node: onnx.NodeProto) -> str:
    """The torch module path the dynamo exporter records on a node ('' when absent)."""
    return next((p.value for p in node.metadata_props if p.key == "namespace"), "")


def scope_nodes(model: onnx.ModelProto, scope: str) -> list[str] | None:
    """Names of the quantisable nodes inside `scope`; None for the whole graph."""
    if scope not in INT8_SCOPES:
        raise ValueError(f"int8 scope must be one of {sorted(INT8_SCOPES)}, got {scope!r}")
    prefixes = INT8_SCOPES[scope]
    if not prefixes:
        return None
    nodes = [
        n.name
        for n in model.graph.node
        if n.op_type in QUANTISABLE_OPS and any(p in module_path(n) for p in prefixes)
    ]
    if not nodes:
        raise ValueError(f"no {scope} nodes found: the graph carries no exporter module paths")
    return nodes


def make_int8(
    src: Path,
    dst: Path,
    method: str,
    calibration: np.ndarray | None = None,
    codebook: np.ndarray | None = None,
    scope: str = "decoder",
    spec: InputSpec | None = None,
) -> None:
    """Write an int8 copy of `src` to `dst`. Static quantisation calibrates on `calibration`
    (uint8 images) fed as the bundle's input contract `spec` says. onnxruntime's calibrator
    keeps every tensor of every batch until the end (its `CalibMaxIntermediateOutputs`
    discards batches in this version rather than merging them), so memory grows with the
    calibration set: see `int8_methods`."""
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load(str(src))
    exclude = codebook_nodes(model, codebook)
    include = scope_nodes(model, scope)
    if method == "dynamic":
        # The exporter's recorded intermediate shapes trip onnx's re-inference inside the
        # quantiser (GRU gate widths); drop them and let it infer afresh.
        del model.graph.value_info[:]
        exclude += shared_weight_gemms(model)
        with tempfile.TemporaryDirectory() as tmp:
            clean = Path(tmp) / "clean.onnx"
            onnx.save(model, str(clean))
            quantize_dynamic(
                str(clean),
                str(dst),
                weight_type=QuantType.QInt8,
                nodes_to_quantize=include,
                nodes_to_exclude=exclude,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    elif method == "static":
        if calibration is None or spec is None:
            raise ValueError("static int8 quantization needs calibration images and their spec")
        with tempfile.TemporaryDirectory() as tmp:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(dst),
                _Calibration(calibration, spec),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=include,  # node names survive the pre-processing
                nodes_to_exclude=codebook_nodes(onnx.load(str(pre)), codebook),
            )
    else:
        raise ValueError(f"int8 method must be dynamic or static, got {method!r}")


def _run(session, images: np.ndarray, spec: InputSpec, batch: int = 32):
    outs = [
        session.run(list(OUTPUT_NAMES), {INPUT_NAME: to_model_input(images[i : i + batch], spec)})
        for i in range(0, len(images), batch)
    ]
    return [np.concatenate([o[j] for o in outs]) for j in range(3)]


def _median_ms(session, x: np.ndarray, repeats: int) -> float:
    session.run(None, {INPUT_NAME: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {INPUT_NAME: x})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(
    reference, candidate, scenes, spec: InputSpec, speed_batch: int = 16, repeats: int = 7
) -> dict:
    """Candidate session against the fp32 reference on labelled scenes, in one run."""
    from training.metrics import fg_ari, nanmean

    images = np.stack([s.image for s in scenes])
    truth = np.stack([s.instances for s in scenes])
    r_masks, r_codes, _ = _run(reference, images, spec)
    c_masks, c_codes, _ = _run(candidate, images, spec)
    x = to_model_input(images[:speed_batch], spec)
    ref_ms, cand_ms = _median_ms(reference, x, repeats), _median_ms(candidate, x, repeats)
    fp32_ari, cand_ari = (
        nanmean(fg_ari(truth, r_masks.argmax(1))),
        nanmean(fg_ari(truth, c_masks.argmax(1))),
    )
    return {
        "code_agreement": round(float((r_codes == c_codes).mean()), 5),
        "argmax_agreement": round(float((r_masks.argmax(1) == c_masks.argmax(1)).mean()), 5),
        "max_mask_diff": float(np.abs(r_masks - c_masks).max()),
        "fg_ari_fp32": round(fp32_ari, 4),
        "fg_ari": round(cand_ari, 4),
        "fg_ari_change": round(cand_ari - fp32_ari, 4),
        "speed_batch": speed_batch,
        "fp32_ms": round(ref_ms, 2),
        "ms": round(cand_ms, 2),
        "speedup_vs_fp32": round(ref_ms / cand_ms, 3),
        "scenes": len(scenes),
    }


def _summary(m: dict) -> str:
    return (
        f"codes {100 * m['code_agreement']:.2f}% as fp32, FG-ARI {m['fg_ari_change']:+.4f}, "
        f"{m['speedup_vs_fp32']:.2f}x fp32 speed"
    )


def passes(m: dict) -> bool:
    return (
        m["code_agreement"] >= MIN_CODE_AGREEMENT and abs(m["fg_ari_change"]) <= MAX_FG_ARI_CHANGE
    )


def variant_scenes(label_set: str | None, n: int, seed: int, size: int) -> list:
    """Labelled scenes the variants are calibrated and judged on: photo scenes of the training
    stamps for a bundle whose codes are named on photos (a photo model judged on shapes would
    be judged off its data), else half textured, half solid shapes scenes."""
    if label_set == "photos":
        from training.labels import labelled_scenes

        return labelled_scenes("photos", n, seed, size)[0]
    from training.data import generate_batch

    return generate_batch(n // 2, seed, "textured", size) + generate_batch(
        n // 2, seed, "solid", size
    )


FULL_EVAL_BATCH = 16


def int8_methods(int8: str, eval_batch: int) -> list[str]:
    """The int8 methods to build. `auto` tries static and dynamic, except for a model whose
    input is too large to calibrate statically here (its evaluation batch, which shrinks with
    the encoder's input, `training.evaluate.eval_batch_size`, below FULL_EVAL_BATCH): holding every
    activation of 128 calibration images of the photo model (Lite0 at 896 px) ran a 24 GB
    machine out of memory. An explicit method is built as asked."""
    if int8 != "auto":
        return [int8]
    if eval_batch < FULL_EVAL_BATCH:
        log.info(
            "int8: static calibration skipped (its activations at this input size do not fit "
            "memory); dynamic only. --int8 static forces it"
        )
        return ["dynamic"]
    return ["static", "dynamic"]


def build_variants(
    bundle: str | Path,
    int8: str = "auto",
    scenes: int = 256,
    threads: int | None = None,
    codebook: np.ndarray | None = None,
    int8_scope: str = "decoder",
) -> dict:
    """Write model.fp16.onnx and model.int8.onnx next to model.onnx; record figures in the
    manifest (variants + file hashes). int8: auto = try static and dynamic, keep the better
    (dynamic only where static calibration would not fit memory: `int8_methods`). Static
    quantisation of the whole graph is measured too, for the record, when static runs and the
    scope is not already `all`; the kept file is the fastest candidate of the asked scope that
    passes the gate (the fastest of that scope when none passes)."""
    from training.config import ModelConfig
    from training.evaluate import eval_batch_size

    bundle = Path(bundle)
    manifest = load_bundle(bundle)
    size = manifest.input.height
    eval_scenes = variant_scenes(manifest.label_set, scenes, 31337, size)
    calib = np.stack([s.image for s in variant_scenes(manifest.label_set, 128, 2718, size)])
    cfg = ModelConfig.model_validate(manifest.model.model_dump())
    eval_batch = eval_batch_size(cfg, FULL_EVAL_BATCH)
    fp32 = ort_session(bundle / MODEL_FILE, threads)
    results: dict[str, dict] = {}

    fp16_path = bundle / VARIANT_FILES["fp16"]
    make_fp16(bundle / MODEL_FILE, fp16_path)
    results["fp16"] = {
        "file": fp16_path.name,
        **measure(fp32, ort_session(fp16_path, threads), eval_scenes, manifest.input),
    }
    log.info("fp16: %s", _summary(results["fp16"]))

    candidates: dict[str, dict] = {}
    failed: dict[str, str] = {}
    methods = int8_methods(int8, eval_batch)
    runs = [(m, int8_scope) for m in methods]
    if int8_scope != "all" and "static" in methods:
        runs.append(("static", "all"))
    for method, scope in runs:
        key = method if scope == int8_scope else f"{method}-{scope}"
        path = bundle / f"model.int8.{key}.onnx"
        try:
            make_int8(bundle / MODEL_FILE, path, method, calib, codebook, scope, manifest.input)
            candidates[key] = {
                "scope": scope,
                **measure(fp32, ort_session(path, threads), eval_scenes, manifest.input),
            }
        except Exception as err:  # a quantiser failure is a finding, not a crash
            reason = str(err).splitlines()[0][:300]
            log.warning("int8 %s failed: %s", key, reason)
            failed[key] = reason
            path.unlink(missing_ok=True)
            continue
        log.info("int8 %s: %s", key, _summary(candidates[key]))
    if not candidates:
        raise RuntimeError(f"every int8 method failed: {failed}")
    pool = {k: r for k, r in candidates.items() if r["scope"] == int8_scope} or candidates
    ok = {k: r for k, r in pool.items() if passes(r)} or pool
    best = max(ok, key=lambda k: ok[k]["speedup_vs_fp32"])
    (bundle / f"model.int8.{best}.onnx").replace(bundle / VARIANT_FILES["int8"])
    for key in candidates:
        (bundle / f"model.int8.{key}.onnx").unlink(missing_ok=True)
    results["int8"] = {
        "file": VARIANT_FILES["int8"],
        "method": best.split("-")[0],
        "passes_gate": passes(candidates[best]),
        **candidates[best],
        "candidates": candidates,
        "failed": failed,
    }
    manifest.variants = results
    for name in ("fp16", "int8"):
        manifest.files[VARIANT_FILES[name]] = sha256_file(bundle / VARIANT_FILES[name])
    write_manifest(bundle, manifest)
    return results
