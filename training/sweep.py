"""Codebook-size sweep: train one model per codebook size E, report perplexity and usage of
the codes on labelled scenes, and recommend a size (the paper picks E by watching perplexity).

Rule: perplexity grows with E until the codebook has more codes than the data has kinds of
slot; past that point extra codes go unused. We recommend the smallest E whose perplexity
reaches 90% of the best perplexity seen, preferring sizes that use at least half their codes."""

from __future__ import annotations

import json
from pathlib import Path

from training.checkpoint import load_checkpoint
from training.config import load_train_config
from training.evaluate import evaluate_model
from training.train import VAL_SEED, train


def recommend(rows: list[dict]) -> int:
    """rows: dicts with codebook_size, code_perplexity, code_usage -> the recommended size."""
    best = max(r["code_perplexity"] for r in rows)
    ok = [r for r in rows if r["code_perplexity"] >= 0.9 * best]
    well_used = [r for r in ok if r["code_usage"] >= 0.5] or ok
    return min(r["codebook_size"] for r in well_used)


def sweep_codebook(
    config: str, sizes: list[int], out: Path, overrides: list[str] | None = None
) -> dict:
    rows = []
    for size in sizes:
        run_dir = out / f"E{size}"
        cfg = load_train_config(
            config, [*(overrides or []), f"model.codebook.size={size}", f"run.out_dir={run_dir}"]
        )
        path = train(cfg, resume=True, progress=False)
        model, _ = load_checkpoint(path)
        row = {"codebook_size": size}
        for variant in ("solid", "textured"):
            m = evaluate_model(model, variant, cfg.run.eval_scenes, VAL_SEED + 3)
            row[f"{variant}_fg_ari"] = m["fg_ari"]
            row[f"{variant}_code_class_nmi"] = m["code_class_nmi"]
        both = evaluate_model(model, "textured", cfg.run.eval_scenes, VAL_SEED + 4)
        row.update(
            code_perplexity=both["code_perplexity"],
            code_usage=both["code_usage"],
            codes_used=both["codes_used"],
        )
        rows.append(row)
    report = {"sizes": rows, "recommended": recommend(rows)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(report, indent=2))
    return report
