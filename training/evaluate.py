"""Evaluation: a model (checkpoint), or a trivial baseline, on shapes scenes or a COCO folder.

Every figure can stand beside the two trivial baselines measured on the same scenes:
`colour` (group pixels by exact RGB colour) and `kmeans` (k-means on RGB, k = slots)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from training.baselines import colour_segmentation, kmeans_segmentation
from training.config import DataConfig
from training.data import SHAPE_CLASSES, Scene, generate_batch, load_coco_folder
from training.metrics import SegmentationEvaluator, code_histogram

# images (B, H, W, 3) uint8 -> (pred ids (B, H, W), codes (B, K) or None)
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def model_predictor(model: torch.nn.Module, batch_size: int = 64) -> Predictor:
    """Argmax over the decoder-alpha masks, and the code of each slot."""

    @torch.no_grad()
    def predict(images: np.ndarray):
        model.eval()
        ids, codes = [], []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2).float().div(255)
            out = model(x)
            ids.append(out.masks.argmax(1).numpy())
            codes.append(out.codes.numpy())
        return np.concatenate(ids), np.concatenate(codes)

    return predict


def bundle_predictor(bundle: str | Path, variant: str = "fp32", batch_size: int = 64) -> Predictor:
    """Argmax masks and codes computed by onnxruntime from an exported bundle."""
    import onnxruntime as ort

    from runtime.contract import (
        INPUT_NAME,
        OUTPUT_CODES,
        OUTPUT_MASKS,
        VARIANT_FILES,
        load_bundle,
        to_model_input,
    )

    spec = load_bundle(bundle).input
    session = ort.InferenceSession(
        str(Path(bundle) / VARIANT_FILES[variant]), providers=["CPUExecutionProvider"]
    )

    def predict(images: np.ndarray):
        ids, codes = [], []
        for i in range(0, len(images), batch_size):
            masks, c = session.run(
                [OUTPUT_MASKS, OUTPUT_CODES],
                {INPUT_NAME: to_model_input(images[i : i + batch_size], spec)},
            )
            ids.append(masks.argmax(1))
            codes.append(c)
        return np.concatenate(ids), np.concatenate(codes)

    return predict


def baseline_predictor(method: str, k: int = 7) -> Predictor:
    if method == "colour":
        return lambda images: (np.stack([colour_segmentation(im) for im in images]), None)
    if method == "kmeans":
        return lambda images: (np.stack([kmeans_segmentation(im, k=k) for im in images]), None)
    raise ValueError(f"unknown method {method!r}: use model, colour or kmeans")


def evaluate_scenes(
    predict: Predictor,
    scenes: Sequence[Scene],
    num_slots: int,
    num_codes: int | None = None,
    class_names: Sequence[str] = SHAPE_CLASSES,
    code_names: Sequence[str | None] | None = None,
    chunk: int = 256,
) -> dict:
    """Metrics of `predict` on `scenes` (all of one size). Codes add codebook statistics."""
    ev = SegmentationEvaluator(
        num_slots=num_slots, num_codes=num_codes, class_names=list(class_names)
    )
    all_codes = []
    for i in range(0, len(scenes), chunk):
        part = scenes[i : i + chunk]
        images = np.stack([s.image for s in part])
        true = np.stack([s.instances for s in part])
        pred, codes = predict(images)
        ev.update(true, [s.classes for s in part], pred, codes if num_codes else None)
        if codes is not None:
            all_codes.append(codes)
    result = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ev.compute().items()}
    if num_codes and all_codes:
        names = ev.code_names()
        result["code_names_measured"] = {str(i): n for i, n in enumerate(names) if n is not None}
        if code_names is not None:
            result["code_name_accuracy"] = _code_name_accuracy(ev, code_names)
    return result


def _code_name_accuracy(ev: SegmentationEvaluator, code_names: Sequence[str | None]) -> float:
    """Fraction of non-empty slots whose stored code name equals their ground-truth class."""
    codes, classes = ev.pairs()
    names = list(ev.class_names or [])
    truth = np.array(["background" if c < 0 else names[c] for c in classes])
    given = np.array([code_names[c] if c < len(code_names) else None for c in codes])
    return round(float(np.mean(given == truth)), 4) if len(truth) else float("nan")


def shapes_scenes(variant: str, n: int, seed: int, size: int, data: DataConfig | None = None):
    d = data or DataConfig()
    return generate_batch(
        n, seed, variant, size, min_objects=d.min_objects, max_objects=d.max_objects
    )


def evaluate_model(model, variant: str, n: int, seed: int, code_names=None, data=None) -> dict:
    cfg = model.cfg
    scenes = shapes_scenes(variant, n, seed, cfg.image_size, data)
    return evaluate_scenes(
        model_predictor(model),
        scenes,
        cfg.slot_attention.num_slots,
        cfg.codebook.size,
        code_names=code_names,
    )


def name_codes_on_shapes(model, n: int, seed: int, data: DataConfig | None = None):
    """Name each code by the majority ground-truth class (background included) of the slots
    assigned to it on `n` labelled scenes of each variant; also return the code-usage
    distribution on those scenes (the drift reference stored with the checkpoint)."""
    cfg = model.cfg
    e, k = cfg.codebook.size, cfg.slot_attention.num_slots
    ev = SegmentationEvaluator(num_slots=k, num_codes=e, class_names=list(SHAPE_CLASSES))
    predict = model_predictor(model)
    for variant in ("solid", "textured"):
        scenes = shapes_scenes(variant, n, seed, cfg.image_size, data)
        pred, codes = predict(np.stack([s.image for s in scenes]))
        ev.update(np.stack([s.instances for s in scenes]), [s.classes for s in scenes], pred, codes)
    used_codes, _ = ev.pairs()
    hist = code_histogram(used_codes, e).astype(np.float64)
    usage = (hist / max(1.0, hist.sum())).round(6).tolist()
    return ev.code_names(), usage


def coco_scenes(folder: str | Path, size: int):
    """Scenes and category names of a COCO-format folder (annotations.json + images/)."""
    coco = load_coco_folder(folder, size)
    return list(coco.scenes), list(coco.category_names)
