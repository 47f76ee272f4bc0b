"""Reading, validating and writing prediction files (``predictions/<split>.csv``).

The contract (docs/ARCHITECTURE.md): columns ``path``, ``label`` (true class), ``predicted``, then
one probability column per class named exactly as the class, in model output order; each row's
probabilities sum to 1. Index columns (``source``, ``sha1``, ...) may ride along and are ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.errors import DataError, suggest
from cxrlab.io import write_csv

logger = logging.getLogger(__name__)

#: Columns every predictions file starts with.
FIXED_COLUMNS: tuple[str, ...] = ("path", "label", "predicted")
#: Index columns allowed beside the class columns; they are not classes.
PASSTHROUGH_COLUMNS = frozenset(
    {"source", "sha1", "split", "mask_path", "width", "height", "mode", "phash", "dup_group"}
)
#: Tolerance on |sum of a row's probabilities - 1|.
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Predictions:
    """One split's predictions, validated.

    Attributes:
        paths: (N,) image paths (str).
        y_true: (N,) true class names.
        y_pred: (N,) predicted class names.
        probs: (N, K) float64 probabilities, columns in ``classes`` order.
        classes: Class names in model output order.
        source: The file read, if any.
        extra: Passthrough columns (e.g. ``sha1``) as a DataFrame aligned with the rows.
    """

    paths: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    source: Path | None = None
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: prediction equals truth."""
        return self.y_pred == self.y_true

    def to_frame(self) -> pd.DataFrame:
        """The predictions as a DataFrame in the file contract's column order."""
        frame = pd.DataFrame({"path": self.paths, "label": self.y_true, "predicted": self.y_pred})
        for j, c in enumerate(self.classes):
            frame[c] = self.probs[:, j]
        for col in self.extra.columns:
            frame[col] = self.extra[col].to_numpy()
        return frame

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        classes: Sequence[str] | None = None,
        *,
        source: str | os.PathLike | None = None,
    ) -> Predictions:
        """Validate a predictions DataFrame (see :func:`read_predictions`)."""
        return _validate(frame, classes, source)


def _where(source) -> str:
    return f"Predictions file {source}" if source is not None else "The predictions table"


def _row_error(source, frame: pd.DataFrame, i: int, problem: str, fix: str) -> DataError:
    path = frame["path"].iloc[i]
    end = "" if problem.endswith((".", "?")) else "."
    return DataError(f"{_where(source)}, data row {i + 1} (path {path}): {problem}{end} {fix}")


def _suggest_class(got: str, classes: list[str]) -> str:
    """Close-match hint, case-insensitive first (``Covid`` -> ``COVID``)."""
    folded = [c for c in classes if c.casefold() == got.casefold()]
    if folded:
        return f" Did you mean {folded[0]!r}?"
    return suggest(got, classes)


def _validate(frame: pd.DataFrame, classes, source) -> Predictions:
    where = _where(source)
    missing_fixed = [c for c in ("path", "label") if c not in frame.columns]
    if missing_fixed:
        raise DataError(
            f"{where} lacks the column(s) {missing_fixed}; a predictions file has columns path, "
            f"label, predicted and one probability column per class (found {list(frame.columns)})."
        )
    if len(frame) == 0:
        raise DataError(f"{where} has no data rows; regenerate it with `cxrlab evaluate RUN_DIR`.")
    candidates = [
        c for c in frame.columns if c not in FIXED_COLUMNS and c not in PASSTHROUGH_COLUMNS
    ]
    if classes is None:
        classes = candidates
        if not classes:
            raise DataError(f"{where} has no probability columns (found {list(frame.columns)}).")
    classes = [str(c) for c in classes]
    missing = [c for c in classes if c not in frame.columns]
    if missing:
        hints = "".join(suggest(m, candidates) for m in missing)
        raise DataError(
            f"{where} lacks probability column(s) {missing} for class(es) of the run "
            f"{classes}.{hints} Were the predictions made by another model? Regenerate them with "
            "`cxrlab evaluate RUN_DIR`."
        )
    extra = [c for c in candidates if c not in classes]
    if extra:
        raise DataError(
            f"{where} has column(s) {extra} that are not classes of the run {classes}. Were the "
            "predictions made by another model? Regenerate them with `cxrlab evaluate RUN_DIR`."
        )

    frame = frame.reset_index(drop=True)
    frame["path"] = frame["path"].astype(str)
    n = len(frame)
    # Every row-level check yields (bad-row mask, problem of row i, what to do); the earliest bad
    # row is reported with its first problem.
    checks = []
    raw = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in classes}
    probs = np.column_stack([raw[c] for c in classes])
    for c in classes:
        checks.append(
            (
                ~np.isfinite(raw[c]),
                lambda i, c=c: f"probability of {c!r} is {frame[c].iloc[i]!r}, not a number",
                "Every row needs a finite probability per class; regenerate the file.",
            )
        )
    finite = np.isfinite(probs).all(axis=1)
    checks.append(
        (
            finite & ((probs < 0) | (probs > 1 + SUM_TOLERANCE)).any(axis=1),
            lambda i: f"probabilities {probs[i].round(6).tolist()} are not all in [0, 1]",
            "The columns must hold probabilities (softmax outputs), not logits.",
        )
    )
    sums = probs.sum(axis=1)
    checks.append(
        (
            finite & (np.abs(sums - 1) > SUM_TOLERANCE),
            lambda i: f"probabilities sum to {sums[i]:.6g}, not 1 (tolerance {SUM_TOLERANCE})",
            "Each row must hold one probability per class of the model (softmax outputs).",
        )
    )
    label_cols = [c for c in ("label", "predicted") if c in frame.columns]
    for col in label_cols:
        values = frame[col]
        known = values.astype(str).isin(classes).to_numpy() & ~values.isna().to_numpy()

        def problem(i, col=col, values=values):
            got = values.iloc[i]
            if pd.isna(got):
                return f"{col} is empty"
            hint = _suggest_class(str(got), classes)
            return f"{col} {got!r} is not a class of the run {classes}.{hint}"

        checks.append(
            (~known, problem, "Predictions must be evaluated with the model's own classes.")
        )
    first = n
    for mask, _, _ in checks:
        bad = np.flatnonzero(mask)
        if len(bad):
            first = min(first, int(bad[0]))
    if first < n:
        for mask, problem, fix in checks:
            if mask[first]:
                raise _row_error(source, frame, first, problem(first), fix)

    y_true = frame["label"].astype(str).to_numpy(dtype=object)
    if "predicted" in frame.columns:
        y_pred = frame["predicted"].astype(str).to_numpy(dtype=object)
        chosen = probs[np.arange(n), pd.Index(classes).get_indexer(y_pred)]
        off = chosen < probs.max(axis=1) - 1e-6
        if off.any():
            logger.warning(
                "%s: %d row(s) have a predicted class that is not the most probable one "
                "(first: data row %d); label metrics use the predicted column.",
                where, int(off.sum()), int(np.flatnonzero(off)[0]) + 1,
            )  # fmt: skip
    else:
        y_pred = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    passthrough = [c for c in frame.columns if c in PASSTHROUGH_COLUMNS]
    return Predictions(
        paths=frame["path"].to_numpy(dtype=object),
        y_true=y_true,
        y_pred=y_pred,
        probs=probs,
        classes=tuple(classes),
        source=Path(source) if source is not None else None,
        extra=frame[passthrough].copy(),
    )


def read_predictions(path: str | os.PathLike, classes: Sequence[str] | None = None) -> Predictions:
    """Read and validate a predictions CSV.

    Args:
        path: ``predictions/<split>.csv``.
        classes: The run's classes in output order; default: every non-index column after
            ``path``, ``label``, ``predicted``, in file order.

    Raises:
        DataError: The file is missing or unreadable, lacks a class column or has one the run
            does not know, or a row has a non-numeric/NaN probability, probabilities outside
            [0, 1] or not summing to 1 (within 1e-3), or a label unknown to the run. The message
            names the file and the first bad row (1-based data row number and its path).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Predictions file {path} does not exist. Run `cxrlab evaluate RUN_DIR` to compute "
            "it from the run's checkpoint."
        )
    try:
        frame = pd.read_csv(
            path,
            dtype={"path": str, "label": str, "predicted": str},
            keep_default_na=False,
            na_values={},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(
            f"Predictions file {path} is not a readable CSV ({exc}). Regenerate it."
        ) from None
    for col in ("label", "predicted"):
        if col in frame.columns:
            frame[col] = frame[col].replace("", np.nan)
    return _validate(frame, classes, path)


def write_predictions(path: str | os.PathLike, frame: pd.DataFrame | Predictions) -> Path:
    """Write predictions atomically after checking the contract (path, label, predicted, classes).

    Returns:
        The path written.
    """
    if isinstance(frame, Predictions):
        frame = frame.to_frame()
    missing = [c for c in FIXED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"Cannot write predictions to {path}: the table lacks column(s) {missing} "
            f"(has {list(frame.columns)})."
        )
    return write_csv(path, frame)
