"""The shortcut rules: when do the probe scores say the model reads something outside the lungs?

``shortcut_suspected`` is true when any of these rules fires (chance = the majority-class rate of
the split, which is at least 1/K; thresholds chosen on synthetic data with and without a planted
shortcut, where they separate the two with a wide margin):

* ``lungs_removed``: accuracy with the lungs blacked out > max(chance + 0.25,
  chance + 0.5 * (clean accuracy - chance)), i.e. the model keeps more than half of its skill
  above chance without the lungs, and at least 25 points above chance;
* ``border_only``: accuracy from the border frame alone > chance + 0.25;
* ``source_identifiable`` (only with >= 30 images with known sources): source-probe accuracy >
  max(majority-source rate, label baseline) + 0.15.

Mean lung attention below the lung-area baseline is reported as supporting evidence
(``low_lung_attention``) but does not set the flag: CAMs of small, coarse layers are too blurred
for a reliable threshold.

:func:`probe_summary` says what the scores and rules found in a few plain sentences. The scores
themselves come from :mod:`cxrlab.explain.probes`.
"""

from __future__ import annotations

import numpy as np

#: Rule thresholds (see the module docstring); recorded in every probe.json.
THRESHOLDS: dict[str, float] = {
    "lungs_removed_margin": 0.25,
    "lungs_removed_retained_fraction": 0.5,
    "border_only_margin": 0.25,
    "source_margin": 0.15,
    "source_min_images": 30,
}


def shortcut_rules(
    *,
    clean_accuracy: float,
    lungs_removed_accuracy: float,
    border_only_accuracy: float,
    chance: float,
    source: dict | None = None,
    attention: dict | None = None,
    thresholds: dict[str, float] | None = None,
) -> list[dict]:
    """Evaluate the flagging rules of the module docstring.

    Args:
        clean_accuracy: Accuracy on unmodified images.
        lungs_removed_accuracy: Accuracy with the lungs blacked out.
        border_only_accuracy: Accuracy from the border frame alone.
        chance: The majority-class rate.
        source: :func:`~cxrlab.explain.probes.source_probe`'s result, if any.
        attention: :func:`~cxrlab.explain.attention.summarize_attention`'s result, if any.
        thresholds: Overrides of :data:`THRESHOLDS` (default: none).

    Returns:
        One dict per rule: ``name``, ``rule`` (in words), ``value``, ``threshold``,
        ``evaluated``, ``triggered`` and ``flags`` (whether it counts toward
        ``shortcut_suspected``).
    """
    t = THRESHOLDS if thresholds is None else {**THRESHOLDS, **thresholds}
    removed_thr = max(
        chance + t["lungs_removed_margin"],
        chance + t["lungs_removed_retained_fraction"] * (clean_accuracy - chance),
    )
    rules = [
        {
            "name": "lungs_removed",
            "rule": (
                "accuracy with the lungs blacked out > max(chance + "
                f"{t['lungs_removed_margin']}, chance + {t['lungs_removed_retained_fraction']} * "
                "(clean accuracy - chance))"
            ),
            "value": lungs_removed_accuracy,
            "threshold": removed_thr,
            "evaluated": True,
            "triggered": bool(lungs_removed_accuracy > removed_thr),
            "flags": True,
        },
        {
            "name": "border_only",
            "rule": f"accuracy from the border frame alone > chance + {t['border_only_margin']}",
            "value": border_only_accuracy,
            "threshold": chance + t["border_only_margin"],
            "evaluated": True,
            "triggered": bool(border_only_accuracy > chance + t["border_only_margin"]),
            "flags": True,
        },
    ]
    src_rule = {
        "name": "source_identifiable",
        "rule": (
            f"source-probe accuracy > max(majority-source rate, label baseline) + "
            f"{t['source_margin']} (needs >= {int(t['source_min_images'])} images with known "
            "sources)"
        ),
        "value": None,
        "threshold": None,
        "evaluated": False,
        "triggered": False,
        "flags": True,
    }
    if source and source.get("status") == "ok" and source["n"] >= t["source_min_images"]:
        base = max(source["majority_rate"], source.get("label_baseline_accuracy") or 0.0)
        src_rule.update(
            value=source["accuracy"],
            threshold=base + t["source_margin"],
            evaluated=True,
            triggered=bool(source["accuracy"] > base + t["source_margin"]),
        )
    rules.append(src_rule)
    att_rule = {
        "name": "low_lung_attention",
        "rule": "mean lung attention ratio < mean lung-area fraction (supporting evidence only)",
        "value": None,
        "threshold": None,
        "evaluated": False,
        "triggered": False,
        "flags": False,
    }
    overall = (attention or {}).get("overall") or {}
    if overall.get("n"):
        att_rule.update(
            value=overall["lung_ratio_mean"],
            threshold=overall["lung_area_mean"],
            evaluated=True,
            triggered=bool(overall["lung_ratio_mean"] < overall["lung_area_mean"]),
        )
    rules.append(att_rule)
    return rules


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.0f}%"


def probe_summary(report: dict) -> str:
    """The plain-language summary of a probe report (probe.json's ``summary``).

    Args:
        report: The probe report: ``split``, ``n_images``, ``chance``, ``clean``, ``probes``,
            ``lung_region``, ``rules``, ``source_probe`` and ``lung_attention`` as
            :func:`cxrlab.explain.probe.probe_images` builds them.
    """
    chance = report["chance"]["majority"]
    clean = report["clean"]["accuracy"]
    removed = report["probes"]["lungs_removed"]["accuracy"]
    only = report["probes"]["lungs_only"]["accuracy"]
    border = report["probes"]["border_only"]["accuracy"]
    region = (
        "lung masks"
        if report["lung_region"]["source"] == "masks"
        else "an approximate central lung region (no masks)"
        if report["lung_region"]["source"] == "central_fallback"
        else "lung masks where available, else an approximate central region"
    )
    fired = [r for r in report["rules"] if r["triggered"] and r["flags"]]
    parts = [
        f"On {report['n_images']} {report['split']} images (chance {_pct(chance)}, clean accuracy "
        f"{_pct(clean)}), blacking out the lungs ({region}) leaves {_pct(removed)} accuracy, the "
        f"lungs alone give {_pct(only)} and the outer border alone {_pct(border)}."
    ]
    if fired:
        why = {
            "lungs_removed": "it keeps much of its accuracy without the lungs",
            "border_only": "the image border alone predicts the class",
            "source_identifiable": (
                "its features identify the image source beyond what the class explains"
            ),
        }
        parts.append(
            "Shortcut suspected: " + "; ".join(why[r["name"]] for r in fired) + ". The model "
            "likely relies on something outside the lungs (text, markers, borders, source "
            "artefacts); inspect the CAM panel and consider a source-held-out split."
        )
    elif clean - chance < 0.1:
        parts.append(
            "No rule flags a shortcut, but the model is near chance on unmodified images, so the "
            "probes have little skill to take away."
        )
    else:
        parts.append("No rule flags a shortcut: without the lungs the model loses its skill.")
    src = report["source_probe"]
    if src.get("status") == "ok":
        parts.append(
            f"Source probe: {_pct(src['accuracy'])} over {src['n_sources']} sources (majority "
            f"{_pct(src['majority_rate'])}, from the class alone "
            f"{_pct(src['label_baseline_accuracy'])})."
        )
    att = report["lung_attention"].get("overall") or {}
    if att.get("n"):
        parts.append(
            f"Mean lung attention {att['lung_ratio_mean']:.2f} vs {att['lung_area_mean']:.2f} "
            "for a uniform map."
        )
    if report["n_images"] < 30:
        parts.append(f"Only {report['n_images']} images: treat these rates as rough.")
    return " ".join(parts)
