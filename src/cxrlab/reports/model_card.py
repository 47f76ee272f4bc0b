"""A model card for a run: the nine sections of Mitchell et al. 2019, filled from its files.

Mitchell M, Wu S, Zaldivar A, et al. Model Cards for Model Reporting. FAT* 2019:220-229,
doi:10.1145/3287560.3287596. Sections: model details, intended use, factors, metrics,
evaluation data, training data, quantitative analyses, ethical considerations, caveats and
recommendations. Each section is a list of plain sentences (rendered as Markdown bullets in
``model_card.md`` and as a list in the report); numbers come from :class:`~cxrlab.reports.facts.
Facts`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrlab.reports.claim import bootstrap_name
from cxrlab.reports.facts import Facts
from cxrlab.reports.style import class_label

CITATION = (
    "Mitchell M, Wu S, Zaldivar A, et al. Model Cards for Model Reporting. Proceedings of the "
    "Conference on Fairness, Accountability, and Transparency (FAT*) 2019:220-229. "
    "doi:10.1145/3287560.3287596"
)
SECTIONS = (
    "Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations",
)  # fmt: skip


@dataclass
class CardSection:
    title: str
    lines: list[str]


def _ci(entry, percent: bool = True) -> str:
    from cxrlab.reports.tables import format_ci

    return format_ci(entry, percent=percent) + ("%" if percent else "")


def model_card(f: Facts) -> list[CardSection]:
    """The nine sections, in Mitchell et al.'s order."""
    d, t, m = f.data, f.training, f.metrics
    r = t["recipe"]
    classes = ", ".join(class_label(c) for c in f.classes)
    env = f.environment
    p = t.get("parameters")
    details = [
        f"Architecture: {r.get('model')}"
        + (f" ({p['weights']:,} parameters)" if p else "")
        + f", {'pretrained' if r.get('pretrained') else 'trained from scratch'}, input "
        f"{r.get('image_size')} x {r.get('image_size')} px grayscale.",
        f"Output: probabilities of {len(f.classes)} classes ({classes}).",
        f"Trained with cxrlab {env.get('cxrlab', '?')}"
        + (f" at commit {env['git_commit'][:12]}" if env.get("git_commit") else "")
        + f", seed {r.get('seed')}, {t.get('epochs_run') or '?'} epochs; the checkpoint kept "
        f"is the one with the best validation {t.get('monitor')}"
        + (f" (epoch {t['chosen_epoch']})." if t.get("chosen_epoch") else "."),
        "Developer, date, licence and contact: to be completed by the author.",
    ]
    intended = [
        "Research only: studying chest radiograph classifiers, their errors and shortcuts.",
        "Not for clinical use: not a medical device, not validated prospectively, not to be "
        "used for diagnosis, triage or any decision about a patient.",
        "Out of scope: images other than frontal chest radiographs, and classes other than "
        f"{classes}.",
    ]
    sources = sorted({s for v in d.get("sources", {}).values() for s in v})
    factors = [
        (
            f"Image sources ({len(sources)}): {', '.join(sources)}."
            if sources
            else "No image sources are recorded in split.csv."
        ),  # fmt: skip
        "Views, devices, patient age and sex: not recorded in the run's files; performance "
        "across them is unknown.",
    ]
    metrics = [
        "Accuracy, per-class sensitivity, specificity, precision and F1, one-vs-rest ROC AUC "
        "and average precision, macro averages; calibration (ECE, Brier score, NLL).",
    ]
    if m is not None:
        b = m.get("bootstrap") or {}
        metrics.append(
            f"95% intervals: Clopper-Pearson for proportions, {bootstrap_name(b.get('method'))} "
            f"({b.get('n_boot')} resamples) for the others (metrics.json)."
        )
    ps = d.get("per_split", {})
    eval_data = [
        f"Internal test partition: {ps.get('test', '?')} images of the same sources as training "
        f"({d.get('method')} split, seed {d.get('split_seed')}; disjoint at "
        f"{d.get('level') or '?'} level)."
    ]
    for e in f.external:
        eval_data.append(
            f"External test set {e['name']}: n = {e['metrics'].get('n', '?')} "
            f"(external/{e['name']}/)."
        )
    if not f.external:
        eval_data.append("No external test set.")
    train_data = [
        f"{ps.get('train', '?')} training and {ps.get('val', '?')} validation images from "
        f"{d.get('data_root') or 'the data folder in config.yaml'}.",
        "Per class (train/val/test): "
        + "; ".join(
            f"{class_label(c)} {v['train']}/{v['val']}/{v['test']}"
            for c, v in d.get("per_class", {}).items()
        )
        + ".",
    ]
    quant = []
    if m is not None:
        mm = m["metrics"]
        for key, label, pct in (("accuracy", "Accuracy", True), ("macro_f1", "Macro F1", True),
                                ("macro_roc_auc", "Macro ROC AUC", False),
                                ("ece", "ECE", False)):  # fmt: skip
            if key in mm:
                quant.append(f"{label} (test, n = {m.get('n')}): {_ci(mm[key], pct)}.")
        for c, e in (m.get("per_class") or {}).items():
            if "recall" in e and "specificity" in e:
                quant.append(
                    f"{class_label(c)}: sensitivity {_ci(e['recall'])}, specificity "
                    f"{_ci(e['specificity'])}."
                )
        for e in f.external:
            acc = (e["metrics"].get("metrics") or {}).get("accuracy")
            if acc:
                quant.append(f"External {e['name']}: accuracy {_ci(acc)}.")
    else:
        quant.append("Not evaluated yet: run `cxrlab evaluate RUN`.")
    ethics = [
        "Trained on public, de-identified radiographs; the de-identification is the data "
        "provider's.",
        "A model that learns a source or a device instead of the disease would look accurate "
        "on an internal test set and fail elsewhere; see the shortcut probes.",
        "Groups of patients (age, sex, ethnicity) cannot be examined: the files hold no such "
        "variables.",
    ]
    if f.probe is not None:
        ethics.append(f"Shortcut probes (probe.json): {f.probe.get('summary', '')}")
    caveats = list(f.limitations)
    return [
        CardSection(title, lines)
        for title, lines in zip(
            SECTIONS,
            (details, intended, factors, metrics, eval_data, train_data, quant, ethics, caveats),
            strict=True,
        )
    ]
