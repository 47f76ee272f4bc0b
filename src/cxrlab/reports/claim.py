"""The CLAIM 2024 checklist, pre-filled from a run directory's files.

CLAIM: Checklist for Artificial Intelligence in Medical Imaging, 2024 update (Tejani AS,
Klontzas ME, Gatti AA, et al. Radiol Artif Intell 2024;6(4):e240300,
doi:10.1148/ryai.240300): 44 items. The item texts below are paraphrased, not quoted; the
checklist itself is the reference. Each item is answered as

* ``filled``: *filled from files*: the value, and the run file it came from;
* ``prefilled``: *pre-filled, author to confirm*: a draft answer from what cxrlab knows of the
  run, which the author must check;
* ``author``: *author only*: nothing in the files answers it.

with the section of the report (``report.html#<anchor>``) that shows the evidence. Nothing is
claimed that the files do not show: where a file is missing, the item falls back to
``prefilled`` or ``author``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cxrlab.reports.claim_items import CITATION, ITEMS, STATUS_TEXT  # noqa: F401
from cxrlab.reports.facts import Facts
from cxrlab.reports.style import class_label
from cxrlab.rundir import RunDir


@dataclass
class ClaimItem:
    """One answered checklist item."""

    number: int
    section: str
    item: str
    status: str
    answer: str
    source: str
    report_section: str

    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status]


Answer = tuple[str, str, str, str]  # status, answer, source file(s), report section
_AUTHOR: Answer = ("author", "", "", "")


def _src(*names: str) -> str:
    """The run files an answer came from, as the checklist's "From" column lists them."""
    return ", ".join(n + "/" if n == RunDir.CHECKPOINTS else n for n in names)


def bootstrap_name(method: str | None) -> str:
    """metrics.json's bootstrap method as a phrase ("stratified BCa bootstrap")."""
    method = str(method or "bootstrap")
    return method if "bootstrap" in method else f"{method} bootstrap"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _ci(entry, percent: bool = True) -> str:
    from cxrlab.reports.tables import format_ci

    return format_ci(entry, percent=percent)


def _fillers(f: Facts) -> dict[int, Callable[[], Answer]]:
    d, t, m = f.data, f.training, f.metrics
    recipe = t["recipe"]

    def src(*names: str) -> str:  # only files the run holds are named as sources
        return _src(*(n for n in names if (f.run.path / n).exists()))

    model = recipe.get("model", "?")

    def item1() -> Answer:
        return ("prefilled", f"Deep learning: a convolutional neural network ({model}) "
                "classifying chest radiographs into " + ", ".join(map(class_label, f.classes)),
                src(RunDir.CONFIG, RunDir.CLASSES), "model")  # fmt: skip

    def item3() -> Answer:
        return ("prefilled", "Intended use: research only, not clinical use (see the model "
                "card).", "", "model-card")  # fmt: skip

    def item5() -> Answer:
        return (
            "prefilled",
            "Retrospective: images of an existing data set "
            f"({d.get('data_root') or 'see config.yaml'}).",
            src(RunDir.CONFIG),
            "data",
        )

    def item6() -> Answer:
        return (
            "prefilled",
            "Model development with internal testing"
            + (" and external testing" if f.external else "")
            + ".",
            "",
            "test",
        )

    def item7() -> Answer:
        if not d["has_split"]:
            return _AUTHOR
        names = sorted({s for v in d["sources"].values() for s in v})
        known = (f"{len(names)} sources recorded: {', '.join(names)}" if names
                 else "no source recorded per image")  # fmt: skip
        return (
            "filled",
            f"Data folder {d.get('data_root')}; {known}.",
            src(RunDir.CONFIG, RunDir.SPLIT),
            "data",
        )

    def item8() -> Answer:
        lim = d.get("limit_per_class")
        text = ("Every decodable image of the class folders was included"
                + (f", at most {lim} per class" if lim else "")
                + f"; {d['skipped']['n']} undecodable file(s) excluded.")  # fmt: skip
        return ("prefilled", text, src(RunDir.CONFIG, RunDir.SKIPPED), "data")

    def item9() -> Answer:
        size = recipe.get("image_size")
        return ("filled", f"Decoded to 8-bit grayscale, resized (stretched, antialiased "
                f"bilinear) to {size} x {size} px, scaled to [0, 1]; normalisation inside the "
                "model.", src(RunDir.CONFIG), "model")  # fmt: skip

    def item10() -> Answer:
        lim = d.get("limit_per_class")
        text = (f"At most {lim} images per class." if lim else
                "No subset selected: all scanned images were split.")  # fmt: skip
        return ("filled", text, src(RunDir.CONFIG, RunDir.SPLIT), "data")

    def item12() -> Answer:
        return ("filled", f"{d['skipped']['n']} undecodable file(s) left out and listed; "
                f"{d.get('n_unknown_source', 0)} image(s) without a recorded source.",
                src(RunDir.SKIPPED, RunDir.SPLIT), "data")  # fmt: skip

    def item14() -> Answer:
        return (
            "prefilled",
            f"The class of each image is its dataset folder ({', '.join(f.classes)}).",
            src(RunDir.SPLIT),
            "data",
        )

    def item17() -> Answer:
        return ("prefilled", "Test images carry the same folder labels as training images; no "
                "separate annotation.", src(RunDir.SPLIT), "data")  # fmt: skip

    def item19() -> Answer:
        if not d["has_split"]:
            return _AUTHOR
        ps = d["per_split"]
        return ("filled", f"{d.get('method')} split, seed {d.get('split_seed')}: train "
                f"{ps['train']} / val {ps['val']} / test {ps['test']} images (requested val "
                f"{_pct(d['fractions']['val'])}, test {_pct(d['fractions']['test'])}).",
                src(RunDir.CONFIG, RunDir.SPLIT), "data")  # fmt: skip

    def item20() -> Answer:
        if not d["has_split"]:
            return _AUTHOR
        return ("filled", f"{d['level'].capitalize()} level: {d['level_detail']}",
                src(RunDir.SPLIT), "data")  # fmt: skip

    def item21() -> Answer:
        return (
            "prefilled",
            "No sample size calculation recorded; the test set is "
            f"{d.get('per_split', {}).get('test', '?')} images.",
            src(RunDir.SPLIT),
            "data",
        )

    def item22() -> Answer:
        p = t.get("parameters")
        params = f", {p['weights']:,} parameters" if p else ""
        return ("filled", f"{model}{params}; input 1 x {recipe.get('image_size')} x "
                f"{recipe.get('image_size')} grayscale, output {len(f.classes)} class "
                "probabilities (softmax).", src(RunDir.CONFIG, RunDir.CHECKPOINTS),
                "model")  # fmt: skip

    def item23() -> Answer:
        pk = f.environment.get("packages") or {}
        if not pk:
            return _AUTHOR
        text = ", ".join(f"{k} {v}" for k, v in pk.items())
        return (
            "filled",
            f"Python {f.environment.get('python')}; {text}; cxrlab {f.environment.get('cxrlab')}.",
            src(RunDir.ENVIRONMENT),
            "model",
        )

    def item24() -> Answer:
        pre = recipe.get("pretrained")
        text = (
            "Pretrained weights (transfer learning)."
            if pre
            else f"Random initialisation (no pretrained weights), seed {recipe.get('seed')}."
        )
        return ("filled", text, src(RunDir.CONFIG), "model")

    def item25() -> Answer:
        keys = ("optimizer", "lr", "weight_decay", "scheduler", "epochs", "batch_size",
                "label_smoothing")  # fmt: skip
        hp = ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe)
        aug = ", ".join(f"{k} {v}" for k, v in t["augment"].items())
        return (
            "filled",
            f"One model trained; {hp}; augmentation: {aug or 'none'}.",
            src(RunDir.CONFIG, RunDir.SUMMARY),
            "model",
        )

    def item26() -> Answer:
        if not t.get("monitor"):
            return _AUTHOR
        ep, of = t.get("chosen_epoch"), t.get("epochs_run") or t.get("epochs_in_history")
        return ("filled", f"Checkpoint with the best validation {t['monitor']}"
                + (f" (epoch {ep} of {of})" if ep else "") + ".",
                src(RunDir.SUMMARY, RunDir.CONFIG, RunDir.HISTORY), "model")  # fmt: skip

    def item27() -> Answer:
        return (
            "filled",
            "No ensembling: one checkpoint.",
            src(RunDir.SUMMARY, RunDir.CHECKPOINTS),
            "model",
        )

    def item28() -> Answer:
        if m is None:
            return _AUTHOR
        return ("filled", "Accuracy, macro and per-class precision, sensitivity, specificity, "
                "F1, ROC AUC, average precision; ECE, Brier score, NLL; operating points.",
                src(RunDir.METRICS), "test")  # fmt: skip

    def item29() -> Answer:
        if m is None:
            return _AUTHOR
        b = m.get("bootstrap") or {}
        return ("filled", f"95% intervals: Clopper-Pearson for proportions; "
                f"{bootstrap_name(b.get('method'))} ({b.get('n_boot')} resamples, seed "
                f"{b.get('seed')}) for the others.",
                src(RunDir.METRICS), "test")  # fmt: skip

    def item30() -> Answer:
        if f.probe is None:
            return ("prefilled", "No robustness analysis in the run's files.", "", "probes")
        names = [k.replace("_", " ") for k in (f.probe.get("probes") or {})]
        if (f.probe.get("source_probe") or {}).get("status") not in (None, "skipped"):
            names.append("source probe")
        return (
            "filled",
            f"Shortcut probes ({', '.join(names)}): " + str(f.probe.get("summary", "")),
            src(RunDir.PROBE),
            "probes",
        )

    def item31() -> Answer:
        if f.explain is None:
            return _AUTHOR
        e = f.explain
        att = e.get("lung_attention") or {}
        val = (
            f"; lung attention checked against {att.get('n_with_mask')} lung masks"
            if att.get("n_with_mask")
            else "; not validated against lung masks"
        )
        return ("filled", f"{e.get('method')} on layer {e.get('layer')} (target "
                f"{e.get('target')}), {e.get('n_images')} images{val}.", "explain/explain.json",
                "cam")  # fmt: skip

    def item32() -> Answer:
        if m is None:
            return _AUTHOR
        acc = m["metrics"].get("accuracy", {})
        return (
            "filled",
            f"Internal test partition, n = {m.get('n')}: accuracy {_ci(acc)}%.",
            src(RunDir.METRICS),
            "test",
        )

    def item33() -> Answer:
        if not f.external:
            return (
                "prefilled",
                "No external test set in the run's files.",
                "external/",
                "limitations",
            )
        names = ", ".join(e["name"] for e in f.external)
        return (
            "filled",
            f"External test set(s): {names}.",
            "external/<name>/metrics.json",
            "external",
        )

    def item35() -> Answer:
        if not d["has_split"]:
            return _AUTHOR
        return ("filled", f"{d['n_images']} images included, {d['skipped']['n']} excluded "
                "(undecodable); per class and partition in the data section. Counts are "
                "images, not patients.", src(RunDir.SPLIT, RunDir.SKIPPED), "data")  # fmt: skip

    def item36() -> Answer:
        return ("prefilled", "No demographic or clinical variables in the files; class and "
                "source counts per partition only.", src(RunDir.SPLIT), "data")  # fmt: skip

    def item37() -> Answer:
        if m is None:
            return _AUTHOR
        mm = m["metrics"]
        parts = [f"accuracy {_ci(mm['accuracy'])}%" if "accuracy" in mm else "",
                 f"macro F1 {_ci(mm['macro_f1'])}%" if "macro_f1" in mm else "",
                 f"macro ROC AUC {_ci(mm['macro_roc_auc'], False)}"
                 if "macro_roc_auc" in mm else ""]  # fmt: skip
        return (
            "filled",
            "Test: " + "; ".join(p for p in parts if p) + ".",
            src(RunDir.METRICS),
            "test",
        )

    def item38() -> Answer:
        if m is None:
            return _AUTHOR
        pc = m.get("per_class") or {}
        parts = [f"{class_label(c)} sensitivity {_ci(e['recall'])}%, specificity "
                 f"{_ci(e['specificity'])}%" for c, e in pc.items()
                 if "recall" in e and "specificity" in e]  # fmt: skip
        ops = (
            " Operating points chosen on val."
            if (m.get("operating_points") or {}).get("classes")
            else ""
        )
        return ("filled", "; ".join(parts) + "." + ops, src(RunDir.METRICS), "test")

    def item39() -> Answer:
        where = src(RunDir.METRICS) + (", explain/" if f.explain else "")
        return ("prefilled", "Confusion matrix" + (" and CAMs of incorrect predictions"
                if f.explain else "") + " shown; interpretation is the author's.", where,
                "test")  # fmt: skip

    def item40() -> Answer:
        return (
            "prefilled",
            f"{len(f.limitations)} limitations written from the files.",
            "(all)",
            "limitations",
        )

    def item41() -> Answer:
        return ("prefilled", "Research use only; not for clinical decisions.", "", "model-card")

    def item42() -> Answer:
        return (
            "prefilled",
            "config.yaml holds the resolved recipe; the report's footer gives "
            "the command that rebuilds it.",
            src(RunDir.CONFIG, RunDir.ENVIRONMENT),
            "footer",
        )

    def item43() -> Answer:
        commit = f.environment.get("git_commit")
        return ("prefilled", f"Trained with cxrlab {f.environment.get('cxrlab')}"
                + (f" (commit {commit[:12]})" if commit else "")
                + "; availability of model and data is the author's statement.",
                src(RunDir.ENVIRONMENT), "footer")  # fmt: skip

    return {
        1: item1, 3: item3, 5: item5, 6: item6, 7: item7, 8: item8, 9: item9, 10: item10,
        12: item12, 14: item14, 17: item17, 19: item19, 20: item20, 21: item21, 22: item22,
        23: item23, 24: item24, 25: item25, 26: item26, 27: item27, 28: item28, 29: item29,
        30: item30, 31: item31, 32: item32, 33: item33, 35: item35, 36: item36, 37: item37,
        38: item38, 39: item39, 40: item40, 41: item41, 42: item42, 43: item43,
    }  # fmt: skip


def claim_checklist(facts: Facts) -> list[ClaimItem]:
    """All 44 CLAIM 2024 items, each answered from ``facts`` (or marked author only)."""
    fillers = _fillers(facts)
    out = []
    for number, section, text in ITEMS:
        status, answer, source, where = fillers[number]() if number in fillers else _AUTHOR
        out.append(ClaimItem(number, section, text, status, answer, source, where))
    return out


def status_counts(items: list[ClaimItem]) -> dict[str, int]:
    """How many items are ``filled``, ``prefilled`` and ``author``."""
    return {s: sum(i.status == s for i in items) for s in STATUS_TEXT}
