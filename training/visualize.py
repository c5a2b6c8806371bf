"""Pictures people would rather look at than read: mask overlays, codebook usage, curves."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 distinct colours (tab20, cycled)."""
    cmap = plt.get_cmap("tab20")
    return (np.array([cmap(i % 20)[:3] for i in range(n)]) * 255).astype(np.uint8)


def overlay(
    image: np.ndarray, ids: np.ndarray, colours: np.ndarray, alpha: float = 0.55
) -> np.ndarray:
    """Blend a label map over an image: image (H, W, 3) uint8, ids (H, W) int -> (H, W, 3) uint8.

    Segment boundaries are darkened so touching segments of similar colour stay apart."""
    colour = colours[ids % len(colours)].astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * colour
    edge = np.zeros(ids.shape, bool)
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    out[edge] *= 0.35
    return out.clip(0, 255).astype(np.uint8)


def save_mask_grid(
    path: Path,
    images: np.ndarray,
    reconstructions: np.ndarray,
    slot_ids: np.ndarray,
    codes: np.ndarray,
    num_codes: int,
    title: str = "",
    object_ids: np.ndarray | None = None,
) -> None:
    """One row per image: input, reconstruction, masks by slot, [objects,] masks by code.

    images/reconstructions (B, H, W, 3) uint8; slot_ids (B, H, W) argmax over slots of the
    decoder alpha; codes (B, K) code index per slot; object_ids (B, H, W), if given, the
    argmax after merging slots that share their pixels (`decoder.merge_share`), each object
    named by its representative slot: a column of its own, and the codes are coloured per
    object."""
    b = len(images)
    cols = 4 if object_ids is None else 5
    fig, axes = plt.subplots(b, cols, figsize=(2 * cols, 2 * b), squeeze=False)
    slot_colours, code_colours = palette(codes.shape[1]), palette(num_codes)
    for i in range(b):
        segments = slot_ids[i] if object_ids is None else object_ids[i]
        panels = [
            (images[i], "input"),
            (reconstructions[i], "reconstruction"),
            (overlay(images[i], slot_ids[i], slot_colours), "slots (decoder alpha)"),
        ]
        if object_ids is not None:
            panels.append((overlay(images[i], object_ids[i], slot_colours), "objects (merged)"))
        panels.append((overlay(images[i], codes[i][segments], code_colours), "codes"))
        for ax, (img, name) in zip(axes[i], panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_code_usage(
    path: Path,
    counts: np.ndarray,
    names: Sequence[str | None] | None = None,
    title: str = "codebook usage",
) -> None:
    """Bar chart of assignments per code (counts (E,)), labelled with code names if known."""
    fig, ax = plt.subplots(figsize=(max(6, len(counts) * 0.25), 3))
    ax.bar(np.arange(len(counts)), counts, color="tab:blue")
    ax.set_xlabel("code")
    ax.set_ylabel("slots assigned")
    ax.set_title(title, fontsize=9)
    if names is not None:
        ax.set_xticks(np.arange(len(counts)))
        ax.set_xticklabels([n or "" for n in names], rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_training_curves(metrics_csv: Path, path: Path) -> None:
    """Plot loss and validation FG-ARI from a Lightning CSVLogger metrics.csv."""
    rows = list(csv.DictReader(metrics_csv.open()))

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps, loss = series("train/mse")
    if loss:
        ax_loss.plot(steps, loss, lw=0.8)
        ax_loss.set_yscale("log")
    ax_loss.set_title("reconstruction MSE (train)")
    ax_loss.set_xlabel("step")
    keys = [k for k in (rows[0].keys() if rows else []) if k.startswith("val/") and "ari" in k]
    for key in sorted(keys):
        ax_val.plot(*series(key), marker="o", ms=3, label=key.removeprefix("val/"))
    ax_val.set_title("validation")
    ax_val.set_xlabel("step")
    ax_val.set_ylim(0, 1)
    if keys:
        ax_val.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
