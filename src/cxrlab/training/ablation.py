"""The Rahman-style preprocessing ablation: one model trained under several preprocessings.

Every variant trains the same model with the same seeds on the same split (the split seed is
fixed, so the test sets are identical), is evaluated (metrics.json), and is compared with ``none``
through :func:`cxrlab.evaluation.compare.compare_runs` (McNemar's exact test on per-image
correctness, Holm-adjusted over all pairs; paired bootstrap differences). Finished variants are
reused, so an interrupted ablation resumes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.config import PreprocessConfig, TrainConfig
from cxrlab.errors import ConfigError, suggest
from cxrlab.io import write_json, write_text

logger = logging.getLogger(__name__)

#: Variant name -> preprocessing (besides the segmenter, given once).
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "clahe": {"method": "clahe"},
    "gamma": {"method": "gamma"},
    "he": {"method": "he"},
    "complement": {"method": "complement"},
    "bcet": {"method": "bcet"},
    "letterbox": {"resize": "letterbox"},
    "lungs-crop": {"lungs": "crop"},
    "lungs-mask": {"lungs": "mask"},
}
#: Rahman et al.'s comparison: the default variants.
DEFAULT_VARIANTS = ("none", "clahe", "gamma", "he", "lungs-crop")


@dataclass
class AblationResult:
    out: Path
    rows: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def variant_configs(
    base: TrainConfig, variants, out: Path, segmenter: str | os.PathLike | None
) -> dict[str, TrainConfig]:
    """One TrainConfig per variant, under ``out/<variant>``, sharing the split seed."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(
            f"--variants: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}."
            + suggest(unknown[0], VARIANTS)
        )
    if "none" not in variants:
        raise ConfigError("--variants must include none: every variant is compared with it.")
    split = base.split.model_copy(update={"seed": base.split.seed if base.split.seed is not None
                                          else base.seed})  # fmt: skip
    configs = {}
    for name in variants:
        spec = dict(VARIANTS[name])
        if "lungs" in spec:
            if segmenter is None:
                raise ConfigError(
                    f"--variants {name} needs --segmenter (the --out of `cxrlab segment train`): "
                    "lungs are cropped or masked with the segmenter's masks."
                )
            spec["segmenter"] = segmenter
        configs[name] = base.model_copy(update={
            "out": out / name, "split": split, "preprocess": PreprocessConfig(**spec),
        })  # fmt: skip
    return configs


def variant_minus_reference(pair: dict[str, Any], variant: str, metric: str) -> dict[str, Any]:
    """``metric(variant) - metric(other)`` with its interval, from a compare_runs pair (A - B)."""
    diff = pair["difference"].get(metric, {})
    if pair["run_a"] == variant:
        return {k: diff.get(k) for k in ("value", "ci_low", "ci_high")}

    def neg(x):
        return None if x is None else -x

    return {"value": neg(diff.get("value")), "ci_low": neg(diff.get("ci_high")),
            "ci_high": neg(diff.get("ci_low"))}  # fmt: skip


def run_ablation(
    base: TrainConfig,
    *,
    out: str | os.PathLike,
    variants=DEFAULT_VARIANTS,
    segmenter: str | os.PathLike | None = None,
    n_boot: int = 1000,
    eval_seed: int = 0,
    progress=None,
) -> AblationResult:
    """Train, evaluate and compare every variant; writes ``out/ablation.{json,md}``."""
    from cxrlab.evaluation.compare import compare_runs
    from cxrlab.reports.tables import format_ci
    from cxrlab.training.cv import run_cell

    out = Path(out)
    configs = variant_configs(base, list(variants), out, segmenter)
    trained = []
    for i, (name, cfg) in enumerate(configs.items()):
        # The study's resumable unit: finished variants are reused, an interrupted one resumes.
        outcome = run_cell(
            cfg, n_boot=n_boot, eval_seed=eval_seed, progress=progress, make_figures=False,
            position=f"[{i + 1}/{len(configs)}] {name}: ",
        )  # fmt: skip
        if outcome.trained:
            trained.append(name)
    comparison = compare_runs([c.out for c in configs.values()], out=out / "comparison",
                              n_boot=n_boot, seed=eval_seed)  # fmt: skip
    rows = []
    for name in configs:
        m = comparison.runs[name]["metrics"]
        pair = next((p for p in comparison.pairs if {p["run_a"], p["run_b"]} == {"none", name}),
                    None)  # fmt: skip
        row = {
            "variant": name,
            "preprocess": configs[name].preprocess.model_dump(mode="json"),
            "n": comparison.runs[name]["n"],
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
        }
        if pair is not None:
            row["vs_none"] = {
                "mcnemar": pair["mcnemar"],
                "accuracy_difference": variant_minus_reference(pair, name, "accuracy"),
            }
        rows.append(row)
    lines = [
        f"Preprocessing ablation: {base.model}, {base.image_size or 'recipe'} px, "
        f"epochs {base.epochs or 'recipe'}, seed {base.seed}; test n = {rows[0]['n']}; 95% CIs "
        "(accuracy: Clopper-Pearson; macro-F1: bootstrap); McNemar exact vs none "
        "(Holm over all pairs).",
        "",
        "| variant | accuracy (%) | macro-F1 (%) | accuracy - none (pp) | McNemar p (Holm) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        vs = row.get("vs_none")
        d = vs["accuracy_difference"] if vs else None
        diff = ""
        if d and d["value"] is not None and d["ci_low"] is not None:
            lo, hi = 100 * d["ci_low"], 100 * d["ci_high"]
            diff = f"{100 * d['value']:+.1f} ({lo:+.1f} to {hi:+.1f})"
        p = (
            ""
            if not vs
            else f"{vs['mcnemar']['p_value']:.3g} ({vs['mcnemar']['p_value_holm']:.3g})"
        )
        lines.append(f"| {row['variant']} | {format_ci(row['accuracy'], percent=True)} | "
                     f"{format_ci(row['macro_f1'], percent=True)} | {diff} | {p} |")  # fmt: skip
    files = {
        "json": write_json(
            out / "ablation.json",
            {"rows": rows, "test_set": comparison.test_set, "bootstrap": comparison.bootstrap},
        ),  # fmt: skip
        "md": write_text(out / "ablation.md", "\n".join(lines) + "\n"),
    }
    return AblationResult(out, rows, trained, files)
