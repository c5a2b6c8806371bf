"""Name a bundle's codes on labelled scenes: the `code_labels` users get as `label`.

Run by `python -m export onnx` after the parity gate, and on its own by `python -m export
labels` (an existing bundle, no checkpoint needed: the bundle's own onnxruntime graph is what
is measured). Only the manifest changes; the graph files and their hashes do not.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.contract import MANIFEST_FILE, CodeLabelSpec, Manifest, load_bundle


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
        specs = [CodeLabelSpec(label=None, score=0.0)] * manifest.codebook_size
        thresholds = {"background": None, "category": None}
    else:
        labels, fitted_thresholds = fitted
        specs = [CodeLabelSpec(**c.to_json()) for c in labels]
        thresholds = {
            "background": fitted_thresholds.background,
            "category": fitted_thresholds.category,
        }
    # Only the label fields change: the rest of the manifest stays as it was written (an older
    # bundle's layout included), so the graph's recorded contract is untouched.
    path = Path(bundle) / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["code_labels"] = [c.model_dump(mode="json") for c in specs]
    raw["label_thresholds"] = thresholds
    raw["label_set"] = label_set
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return load_bundle(bundle)
