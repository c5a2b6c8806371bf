"""Evaluation: a model (checkpoint), or a trivial baseline, on shapes scenes or a COCO folder.

Every figure can stand beside the two trivial baselines measured on the same scenes:
`colour` (group pixels by exact RGB colour) and `kmeans` (k-means on RGB, k = slots)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runtime.resize import masks_to_labels, to_model_size
from training.baselines import (
    colour_segmentation,
    kmeans_feature_segmentation,
    kmeans_segmentation,
)
from training.config import DataConfig, ModelConfig
from training.data import SHAPE_CLASSES, Scene, generate_batch, load_coco_folder
from training.labels import CodeLabel, label_model_codes, object_records, summarise_records
from training.metrics import SegmentationEvaluator, code_histogram

log = logging.getLogger(__name__)

# images (B, H, W, 3) uint8 -> (pred ids (B, H, W), codes (B, K) or None)
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _model_inputs(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 images (B, H, W, 3) at the model's input size, resized as the service resizes
    them (`runtime.resize`)."""
    if images.shape[1:3] == (height, width):
        return images
    return np.stack([to_model_size(Image.fromarray(im), height, width) for im in images])


def _slot_maps(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Soft masks (B, K, h, w) -> slot id per pixel (B, height, width), as the service does."""
    return np.stack([masks_to_labels(m, height, width) for m in masks]).astype(np.int64)


PIXELS_PER_BATCH = 64 * 256 * 256
"""Evaluation batches hold at most this many pixels of the encoder's input: 64 images of the
shapes model, 5 of a Lite0 model seeing 896 px. A batch of 64 at 896 px held over 10 GB of
activations, which beside a training run's cached features ran a 24 GB machine out of
memory at the end of `make train-photos`."""


def eval_batch_size(cfg: ModelConfig, most: int = 64) -> int:
    """Images per evaluation batch for a model of `cfg` (`PIXELS_PER_BATCH`)."""
    side = cfg.image_size
    if cfg.encoder.kind == "lite0":
        side = cfg.encoder.eval_input or cfg.encoder.lite0_input
    return max(1, min(most, PIXELS_PER_BATCH // side**2))


def model_predictor(model: torch.nn.Module, batch_size: int | None = None) -> Predictor:
    """Argmax over the decoder-alpha masks, and the code of each slot. Images of another size
    than the model's are resized to it first and the soft masks back, by the service's own
    functions (`runtime.resize`). Batches of `eval_batch_size` images unless given."""
    size = model.cfg.image_size
    batch_size = batch_size or eval_batch_size(model.cfg)

    @torch.no_grad()
    def predict(images: np.ndarray):
        model.eval()
        ids, codes = [], []
        for i in range(0, len(images), batch_size):
            part = images[i : i + batch_size]
            x = torch.from_numpy(_model_inputs(part, size, size)).permute(0, 3, 1, 2)
            out = model(x.float().div(255))
            ids.append(_slot_maps(out.masks.numpy(), *part.shape[1:3]))
            codes.append(out.codes.numpy())
        return np.concatenate(ids), np.concatenate(codes)

    return predict


def bundle_predictor(bundle: str | Path, variant: str = "fp32", batch_size: int = 64) -> Predictor:
    """Argmax masks and codes computed by onnxruntime from an exported bundle (images of
    another size resized to the bundle's input and the masks back, as the service does:
    `runtime.resize`)."""
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
            part = images[i : i + batch_size]
            x = to_model_input(_model_inputs(part, spec.height, spec.width), spec)
            masks, c = session.run([OUTPUT_MASKS, OUTPUT_CODES], {INPUT_NAME: x})
            ids.append(_slot_maps(masks, *part.shape[1:3]))
            codes.append(c)
        return np.concatenate(ids), np.concatenate(codes)

    return predict


def baseline_predictor(method: str, k: int = 7) -> Predictor:
    if method == "colour":
        return lambda images: (np.stack([colour_segmentation(im) for im in images]), None)
    if method == "kmeans":
        return lambda images: (np.stack([kmeans_segmentation(im, k=k) for im in images]), None)
    if method == "kmeans-features":
        return lambda images: (kmeans_feature_segmentation(images, k=k), None)
    raise ValueError(f"unknown method {method!r}: use model, colour, kmeans or kmeans-features")


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
    all_codes, judged = [], []
    # Labels are judged only against the classes they name (a shapes model's code names say
    # nothing about photo categories).
    named = {n for n in (code_names or []) if n is not None and n != "background"}
    judge_labels = code_names is not None and named <= set(class_names)
    for i in range(0, len(scenes), chunk):
        part = scenes[i : i + chunk]
        images = np.stack([s.image for s in part])
        true = np.stack([s.instances for s in part])
        pred, codes = predict(images)
        ev.update(true, [s.classes for s in part], pred, codes if num_codes else None)
        if codes is not None:
            all_codes.append(codes)
            if judge_labels:
                judged += object_records(
                    true, [s.classes for s in part], pred, codes, code_names, class_names
                )
    result = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ev.compute().items()}
    if num_codes and all_codes:
        names = ev.code_names()
        result["code_names_measured"] = {str(i): n for i, n in enumerate(names) if n is not None}
        if code_names is not None:
            result["code_name_accuracy"] = _code_name_accuracy(ev, code_names)
            if judged:
                result["labels"] = summarise_records(judged)
    return result


def _code_name_accuracy(ev: SegmentationEvaluator, code_names: Sequence[str | None]) -> float:
    """Fraction of non-empty slots whose stored code name equals their ground-truth class."""
    codes, classes = ev.pairs()
    names = list(ev.class_names or [])
    truth = np.array(["background" if c < 0 else names[c] for c in classes])
    given = np.array([code_names[c] if c < len(code_names) else None for c in codes])
    return round(float(np.mean(given == truth)), 4) if len(truth) else float("nan")


PHOTO_VARIANTS = {"photos": "train", "photos-unseen": "unseen"}
"""Photo-scene variants: new scenes of the training stamps, or of the held-out fifth."""


def evaluation_scenes(
    variant: str, n: int, seed: int, height: int, width: int | None = None
) -> tuple[list[Scene], list[str]]:
    """(scenes, class names) of a shapes variant (square) or a photo variant (any size)."""
    if variant in PHOTO_VARIANTS:
        from training.data.photos import generate_photo_batch, photo_library

        scenes = generate_photo_batch(n, seed, height, width, split=PHOTO_VARIANTS[variant])
        return scenes, list(photo_library().categories)
    if width not in (None, height):
        raise ValueError(f"shapes scenes are square: got {height}x{width}")
    return shapes_scenes(variant, n, seed, height), list(SHAPE_CLASSES)


def shapes_scenes(variant: str, n: int, seed: int, size: int, data: DataConfig | None = None):
    d = data or DataConfig()
    return generate_batch(
        n, seed, variant, size, min_objects=d.min_objects, max_objects=d.max_objects
    )


def evaluate_model(model, variant: str, n: int, seed: int, code_names=None, data=None) -> dict:
    cfg = model.cfg
    if variant in PHOTO_VARIANTS:
        scenes, class_names = evaluation_scenes(variant, n, seed, cfg.image_size)
    else:
        scenes, class_names = shapes_scenes(variant, n, seed, cfg.image_size, data), SHAPE_CLASSES
    return evaluate_scenes(
        model_predictor(model),
        scenes,
        cfg.slot_attention.num_slots,
        cfg.codebook.size,
        class_names,
        code_names=code_names,
    )


def labelled_variants(data: DataConfig | None) -> tuple[str, ...]:
    """The labelled scenes a run is judged and its codes named on: photo scenes for the photo
    recipe, both shapes variants otherwise (a folder of the user's images has no labels)."""
    return ("photos",) if data is not None and data.variant == "photos" else ("solid", "textured")


def name_codes_on_shapes(model, n: int, seed: int, data: DataConfig | None = None):
    """Name each code by the majority ground-truth class (background included) of the slots
    assigned to it on `n` labelled scenes of each variant; also return the code-usage
    distribution on those scenes (the drift reference stored with the checkpoint)."""
    cfg = model.cfg
    e, k = cfg.codebook.size, cfg.slot_attention.num_slots
    variants = labelled_variants(data)
    names = evaluation_scenes(variants[0], 1, seed, cfg.image_size)[1]
    ev = SegmentationEvaluator(num_slots=k, num_codes=e, class_names=names)
    predict = model_predictor(model)
    for variant in variants:
        if variant in PHOTO_VARIANTS:
            scenes = evaluation_scenes(variant, n, seed, cfg.image_size)[0]
        else:
            scenes = shapes_scenes(variant, n, seed, cfg.image_size, data)
        pred, codes = predict(np.stack([s.image for s in scenes]))
        ev.update(np.stack([s.instances for s in scenes]), [s.classes for s in scenes], pred, codes)
    used_codes, _ = ev.pairs()
    hist = code_histogram(used_codes, e).astype(np.float64)
    usage = (hist / max(1.0, hist.sum())).round(6).tolist()
    return ev.code_names(), usage


def label_set_of(variant: str) -> str:
    """The labelled set whose categories a variant's objects carry."""
    return "photos" if variant in PHOTO_VARIANTS else "shapes"


def fit_model_labels(model, label_set: str, scenes: int = 256) -> list[CodeLabel] | None:
    """A model's served code labels on `label_set` scenes, by the rule an exported bundle's
    are fitted with (`training.labels.label_model_codes`); None for the `none` set."""
    cfg = model.cfg
    fitted = label_model_codes(
        model_predictor(model),
        cfg.slot_attention.num_slots,
        cfg.codebook.size,
        label_set,
        cfg.image_size,
        scenes,
    )
    return None if fitted is None else fitted[0]


def checkpoint_labels(
    model, info, label_set: str, scenes: int = 256, refit: bool = False
) -> list[CodeLabel] | None:
    """The served code labels of a checkpoint for `label_set`: the ones fitted when it was
    trained, or fitted now for a checkpoint without them (or fitted on another set), or with
    `refit` (the model runs at other inference settings than it was trained with)."""
    if not refit and info.code_labels is not None and info.label_set == label_set:
        return info.code_labels
    log.info(
        "fitting the checkpoint's code labels on %s scenes (%d to name, %d to check)",
        label_set,
        scenes,
        scenes,
    )
    return fit_model_labels(model, label_set, scenes)


def coco_scenes(folder: str | Path, size: int):
    """Scenes and category names of a COCO-format folder (annotations.json + images/)."""
    coco = load_coco_folder(folder, size)
    return list(coco.scenes), list(coco.category_names)
