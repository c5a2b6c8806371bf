"""Name a bundle's codes on labelled scenes: the `code_labels` users get as `label`.

Run by `python -m export onnx` after the parity gate, and on its own by `python -m export
labels` (an existing bundle, no checkpoint needed: the bundle's own onnxruntime graph is what
is measured). Only the manifest changes; the graph files and their hashes do not.
"""

from __future__ import annotations

from pathlib import Path

from runtime.contract import CodeLabelSpec, Manifest, load_bundle, write_manifest


def label_bundle(bundle: str | Path, label_set: str = "shapes", scenes: int = 256) -> Manifest:
    """Measure code labels of `bundle` on `label_set` scenes and write them to its manifest.

    `scenes`: labelled scenes in the naming set and as many in the validation set (for the
    shapes set, of each variant). `label_set="none"` clears the labels: every label is null."""
    from training.evaluate import bundle_predictor
    from training.labels import label_model_codes

    manifest = load_bundle(bundle)
    fitted = label_model_codes(
        bundle_predictor(bundle),
        manifest.num_slots,
        manifest.codebook_size,
        label_set,
        manifest.input.height,
        scenes,
    )
    if fitted is None:
        labels, thresholds = [None] * manifest.codebook_size, None
        manifest.code_labels = [CodeLabelSpec(label=None, score=0.0)] * manifest.codebook_size
        manifest.label_thresholds = {"background": None, "category": None}
    else:
        labels, thresholds = fitted
        manifest.code_labels = [CodeLabelSpec(**c.to_json()) for c in labels]
        manifest.label_thresholds = {
            "background": thresholds.background,
            "category": thresholds.category,
        }
    manifest.label_set = label_set
    write_manifest(bundle, manifest)
    return manifest
