"""Facts of a run directory for the report, the model card and the CLAIM checklist.

:func:`collect_facts` reads only the run's files (config.yaml, environment.json, split.csv,
skipped.csv, history.csv, train_summary.json, classes.json, metrics.json, probe.json,
explain/explain.json, RUN/external/<name>/, and the checkpoint's tensors for the parameter count)
and returns plain data: every number shown later comes from here, with the file it came from.
Nothing is computed that the files do not hold, except counts and sums of their rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import RunDirError
from cxrlab.rundir import SPLITS, RunDir

logger = logging.getLogger(__name__)

#: split.csv columns that would identify a patient, if a dataset provided one.
PATIENT_COLUMNS = ("patient_id", "patient", "subject_id", "subject")
#: Recipe fields shown in the model-and-training section (config.yaml keys).
RECIPE_KEYS = (
    "model", "pretrained", "image_size", "epochs", "batch_size", "optimizer", "lr",
    "weight_decay", "scheduler", "warmup_epochs", "label_smoothing", "ema_decay",
    "early_stopping_patience", "monitor", "class_weights", "sampler", "precision", "seed",
)  # fmt: skip


@dataclass
class Facts:
    """What the run's files say, section by section (plain dicts and frames)."""

    run: RunDir
    classes: list[str]
    config: dict[str, Any]
    environment: dict[str, Any]
    summary: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any] | None
    probe: dict[str, Any] | None
    explain: dict[str, Any] | None
    external: list[dict[str, Any]] = field(default_factory=list)
    history: pd.DataFrame | None = None
    limitations: list[str] = field(default_factory=list)

    def has(self, name: str) -> bool:
        """Whether a section's source files exist (``metrics``, ``probe``, ``explain``...)."""
        value = getattr(self, name)
        return bool(value) if not isinstance(value, pd.DataFrame) else not value.empty


def _read_json(run: RunDir, path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    value = run.read_json(path)
    return value if isinstance(value, dict) else {"value": value}


def collect_facts(run_dir) -> Facts:
    """Read a run directory's files into :class:`Facts`.

    Raises:
        RunDirError: The folder is missing, or holds neither split.csv nor metrics.json (not a
            run directory).
    """
    run = RunDir.open(run_dir)
    if not run.split.is_file() and not run.metrics.is_file():
        raise RunDirError(
            f"{run.path} holds neither {RunDir.SPLIT} nor {RunDir.METRICS}, so there is nothing "
            "to report. Pass a run directory written by `cxrlab train` (and `cxrlab evaluate`)."
        )
    config = run.read_config()
    environment = _read_json(run, run.environment) or {}
    summary = _read_json(run, run.summary) or {}
    metrics = _read_json(run, run.metrics)
    classes = _classes(run, metrics)
    split = run.read_split() if run.split.is_file() else None
    history = _read_history(run)
    facts = Facts(
        run=run,
        classes=classes,
        config=config,
        environment=environment,
        summary=summary,
        data=data_facts(split, classes, config, _read_skipped(run)),
        training=training_facts(run, config, summary, history),
        metrics=metrics,
        probe=_read_json(run, run.probe),
        explain=_read_json(run, run.explain_json),
        external=external_facts(run),
        history=history,
    )
    facts.limitations = limitations(facts)
    return facts


def _classes(run: RunDir, metrics: dict | None) -> list[str]:
    if metrics and isinstance(metrics.get("classes"), list):
        return [str(c) for c in metrics["classes"]]
    if run.classes_file.is_file():
        return list(run.read_classes() or [])
    return []


def _read_history(run: RunDir) -> pd.DataFrame | None:
    if not run.history.is_file():
        return None
    try:
        return pd.read_csv(run.history)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        logger.warning("Could not read %s (%s); no training curves", run.history, exc)
        return None


def _read_skipped(run: RunDir) -> pd.DataFrame | None:
    if not run.skipped.is_file():
        return None
    try:
        return pd.read_csv(run.skipped, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
        return None


# -- data ----------------------------------------------------------------------------------------
def data_facts(
    split: pd.DataFrame | None,
    classes: list[str],
    config: dict[str, Any],
    skipped: pd.DataFrame | None,
) -> dict[str, Any]:
    """Images per class, split and source; duplicates; the partition method and its level."""
    split_cfg = config.get("split") or {}
    out: dict[str, Any] = {
        "data_root": config.get("data"),
        "method": split_cfg.get("method"),
        "fractions": {"val": split_cfg.get("val"), "test": split_cfg.get("test")},
        "split_seed": split_cfg.get("seed")
        if split_cfg.get("seed") is not None
        else config.get("seed"),
        "split_csv": split_cfg.get("csv"),
        "near_duplicates": split_cfg.get("near_duplicates"),
        "limit_per_class": config.get("limit_per_class"),
        "skipped": _skipped_facts(skipped),
        "has_split": split is not None,
    }
    if split is None:
        out.update(n_images=None, per_split={}, per_class={}, sources={}, level=None)
        return out
    labels = classes or sorted(split["label"].unique())
    out["n_images"] = int(len(split))
    out["per_split"] = {s: int((split["split"] == s).sum()) for s in SPLITS}
    out["per_class"] = {
        c: {s: int(((split["label"] == c) & (split["split"] == s)).sum()) for s in SPLITS}
        for c in labels
    }
    source = split["source"].astype(str)
    known = source != ""
    out["n_unknown_source"] = int((~known).sum())
    out["sources"] = {
        c: dict(source[known & (split["label"] == c)].value_counts().sort_index().astype(int))
        for c in labels
    }
    out["n_sources"] = int(source[known].nunique())
    out["image_sizes"] = _sizes(split)
    out["duplicates"] = _duplicates(split)
    out["masks"] = int((split["mask_path"].astype(str) != "").sum())
    patient = next((c for c in PATIENT_COLUMNS if c in split.columns), None)
    out["patient_column"] = patient
    if patient:
        out["level"] = "patient"
    elif out["method"] in ("source", "source_held_out", "source-held-out"):
        out["level"] = "source"
    else:
        out["level"] = "image"
    out["level_detail"] = _level_detail(out, patient)
    return out


def _skipped_facts(skipped: pd.DataFrame | None) -> dict[str, Any]:
    if skipped is None or skipped.empty:
        return {"n": 0, "reasons": {}}
    col = "reason" if "reason" in skipped.columns else skipped.columns[-1]
    reasons = skipped[col].astype(str).str.split(r"[:(]", n=1, regex=True).str[0].str.strip()
    return {"n": int(len(skipped)), "reasons": dict(reasons.value_counts().astype(int))}


def _sizes(split: pd.DataFrame) -> str | None:
    if not {"width", "height"} <= set(split.columns):
        return None
    wh = split["width"].astype(str) + " x " + split["height"].astype(str)
    counts = wh[wh != " x "].value_counts()
    if counts.empty:
        return None
    top = ", ".join(f"{k} px ({v})" for k, v in counts.head(3).items())
    return top + (f" and {len(counts) - 3} other sizes" if len(counts) > 3 else "")


def _duplicates(split: pd.DataFrame) -> dict[str, Any]:
    """Exact duplicates (same sha1) and near-duplicate groups (same ``dup_group``)."""
    out: dict[str, Any] = {"exact_images": None, "exact_groups": None, "near_groups": None}
    if "sha1" in split.columns and (split["sha1"] != "").all():
        sizes = split.groupby("sha1").size()
        out["exact_groups"] = int((sizes > 1).sum())
        out["exact_images"] = int(sizes[sizes > 1].sum() - (sizes > 1).sum())
    if "dup_group" in split.columns:
        groups = split.groupby("dup_group")
        sizes = groups.size()
        out["near_groups"] = int((sizes > 1).sum())
        out["near_images"] = int(sizes[sizes > 1].sum())
        out["straddling"] = int((groups["split"].nunique() > 1).sum())
    return out


def _level_detail(data: dict[str, Any], patient: str | None) -> str:
    if patient:
        return f"no {patient} appears in more than one partition."
    dup = data["duplicates"]
    kept = (
        " Exact and near-duplicate images are kept together in one partition"
        if dup.get("near_groups") is not None
        else ""
    )
    if data["level"] == "source":
        return "each source's images sit in one partition." + kept
    return (
        "split.csv has no patient identifier, so images of one patient may sit in "
        "different partitions."
        + kept
        + (f" (straddling groups: {dup.get('straddling', 0)})." if kept else "")
    )


# -- model and training --------------------------------------------------------------------------
def chosen_epoch(history: pd.DataFrame | None, monitor: str | None) -> int | None:
    """The 1-based epoch of the checkpoint kept: the best ``monitor`` value in history.csv.

    ``*loss`` monitors are minimised, others maximised (Lightning's ModelCheckpoint mode in
    cxrlab's recipes). None when history or the monitored column is missing.
    """
    if history is None or not monitor or monitor not in history.columns:
        return None
    from cxrlab.reports.figures import history_epochs

    values = pd.to_numeric(history[monitor], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).any():
        return None
    best = np.nanargmin(values) if monitor.endswith("loss") else np.nanargmax(values)
    return int(history_epochs(history)[best])


def train_loss_note(config: dict[str, Any]) -> str:
    """How the training loss differs from the validation loss, from config.yaml."""
    parts = []
    smoothing = config.get("label_smoothing")
    if smoothing:
        parts.append(f"label smoothing {smoothing:g}")
    augment = config.get("augment") or {}
    if any(v for k, v in augment.items() if k != "hflip") or augment.get("hflip"):
        parts.append("augmented images")
    return ", ".join(parts)


def training_facts(
    run: RunDir, config: dict[str, Any], summary: dict[str, Any], history: pd.DataFrame | None
) -> dict[str, Any]:
    recipe = {**{k: config.get(k) for k in RECIPE_KEYS if k in config}}
    recipe.update({k: v for k, v in (summary.get("recipe") or {}).items() if k not in recipe})
    if summary.get("precision"):
        recipe["precision"] = summary["precision"]
    monitor = summary.get("monitor") or config.get("monitor")
    epoch = chosen_epoch(history, monitor)
    out = {
        "recipe": recipe,
        "augment": config.get("augment") or {},
        "monitor": monitor,
        "best_score": summary.get("best_score"),
        "epochs_run": summary.get("epochs_run"),
        "epochs_in_history": None if history is None else int(len(history)),
        "finished": run.is_finished(),
        "seconds": summary.get("seconds"),
        "chosen_epoch": epoch,
        "best_checkpoint": summary.get("best_checkpoint"),
        "train_loss_note": train_loss_note(config),
        "parameters": parameter_count(run),
    }
    return out


def parameter_count(run: RunDir) -> dict[str, Any] | None:
    """Parameters in the kept checkpoint's weights (batch-norm statistics counted apart).

    Reads the checkpoint's tensors on the CPU (torch, no model code); None without a checkpoint
    or torch.
    """
    path = run.find_checkpoint()
    if path is None:
        return None
    try:
        from cxrlab.models.checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
    except Exception as exc:  # a report must not fail on a damaged checkpoint
        logger.warning("Parameter count unavailable: %s", exc)
        return None
    weights = stats = 0
    for name, tensor in ckpt["state_dict"].items():
        if not hasattr(tensor, "numel"):
            continue
        if name.endswith(("running_mean", "running_var")):
            stats += int(tensor.numel())
        elif not name.endswith("num_batches_tracked"):
            weights += int(tensor.numel())
    meta = ckpt.get("cxrlab_meta") or {}
    return {
        "weights": weights,
        "batchnorm_statistics": stats,
        "checkpoint": str(path.relative_to(run.path)),
        "in_chans": meta.get("in_chans"),
        "image_size": meta.get("image_size"),
        "cam_layer": meta.get("cam_layer"),
        "model_name": meta.get("model_name"),
    }


# -- external validation -------------------------------------------------------------------------
def external_facts(run: RunDir) -> list[dict[str, Any]]:
    """One entry per ``RUN/external/<name>/`` holding a metrics.json."""
    out = []
    for ext in run.externals():
        if not ext.metrics.is_file():
            continue
        entry: dict[str, Any] = {"name": ext.name, "folder": ext.path,
                                 "metrics": run.read_json(ext.metrics)}  # fmt: skip
        if ext.overlap.is_file():
            entry["overlap"] = pd.read_csv(ext.overlap, keep_default_na=False, dtype=str)
        if ext.predictions.is_file():
            entry["n_predictions"] = int(
                len(pd.read_csv(ext.predictions, usecols=[0], keep_default_na=False))
            )
        out.append(entry)
    return out


# -- limitations ---------------------------------------------------------------------------------
def limitations(facts: Facts) -> list[str]:
    """Limitations that follow from facts in the files, one sentence each."""
    from cxrlab.reports.style import class_label

    out: list[str] = []
    data = facts.data
    if data.get("has_split"):
        if not data.get("patient_column"):
            out.append(
                "No patient identifiers: split.csv records none, so images of one patient may "
                "sit in different partitions and the test estimates may be optimistic."
            )
        for c, sources in data.get("sources", {}).items():
            if len(sources) == 1:
                only = next(iter(sources))
                out.append(
                    f"{class_label(c)} comes from a single source ({only}), so source-held-out "
                    f"evaluation of it is impossible, and a model may recognise the source "
                    "rather than the disease."
                )
        if data.get("n_unknown_source") == data.get("n_images"):
            out.append("No image sources are recorded, so source effects cannot be examined.")
        if data.get("masks", 0) == 0:
            out.append(
                "No lung masks in split.csv: the shortcut probes fall back to a fixed central "
                "lung region and lung attention of the CAMs cannot be measured."
            )
        per_class = {c: v["test"] for c, v in data.get("per_class", {}).items()}
        small = [class_label(c) for c, n in per_class.items() if n < 100]
        if small:
            out.append(
                f"Small test set per class ({', '.join(small)}: fewer than 100 test images "
                "each); see the interval widths."
            )
    if not facts.external:
        out.append(
            "No external test set: every estimate is on an internal test partition of the "
            "training data's sources."
        )
    if not facts.run.is_finished():
        out.append(
            "Training had not finished when these files were read (no train_summary.json): "
            "the checkpoint is the best one so far, and its numbers are provisional."
        )
    if facts.metrics is None:
        out.append("No metrics.json: the run has not been evaluated (`cxrlab evaluate RUN`).")
    if facts.probe is None:
        out.append("No shortcut probes were run (`cxrlab probe RUN`).")
    elif facts.probe.get("shortcut_suspected"):
        out.append(
            "The shortcut probes flag a suspected shortcut (probe.json): the model may use "
            "information outside the lungs."
        )
    size = facts.training["recipe"].get("image_size")
    if size and int(size) < 128:
        out.append(
            f"Images are reduced to {size} x {size} px, below the resolution at which "
            "radiologists read chest radiographs; fine findings are lost."
        )
    out.append(
        "Retrospective data with labels as given by the dataset (class folders); the reference "
        "standard and its quality are those of the dataset's curators."
    )
    return out
