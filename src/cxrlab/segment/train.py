"""Train and evaluate the lung segmenter; the run directory is laid out like a classifier's.

``config.yaml`` (the options), ``environment.json``, ``split.csv`` (image, mask, group, split),
``history.csv`` (per epoch: train loss, val Dice), ``checkpoints/best.ckpt`` (best val Dice:
weights + :class:`~cxrlab.segment.model.SegMeta` in one file), ``predictions/test.csv`` (Dice and
IoU per held-out image), ``metrics.json`` (their mean with a BCa bootstrap interval over patients,
median, minimum) and ``train_summary.json`` last. Dice and IoU are measured at the mask's own
resolution: the predicted probabilities are resized back to it before thresholding.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import RunDirError
from cxrlab.io import refuse_inside, write_csv, write_json, write_text
from cxrlab.rundir import RunDir
from cxrlab.segment.data import Pair, find_pairs, load_pair, read_mask, split_pairs
from cxrlab.segment.model import SegMeta, build_segmenter, dice_iou, save_segmenter, segment_grays

logger = logging.getLogger(__name__)


@dataclass
class SegmentConfig:
    """Options of ``cxrlab segment train``."""

    data: Path
    out: Path
    image_size: int = 128
    encoder: str = "resnet18"
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    val: float = 0.15
    test: float = 0.15
    #: Stop starting new epochs after this many minutes (None: no limit).
    time_limit: float | None = None
    #: Use at most this many training pairs (quick runs and tests).
    limit: int | None = None
    threads: int | None = None
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegmentResult:
    run_dir: Path
    metrics: dict[str, Any]
    epochs_run: int
    seconds: float


def _augment(x, y, v, gen):
    """Random affine (rotate 10 deg, shift 6%, zoom 10%), brightness/contrast/gamma, on a batch."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    u = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    ang = u(-10, 10) * math.pi / 180
    s = u(0.9, 1.1)
    tx, ty = u(-0.06, 0.06), u(-0.06, 0.06)
    theta = torch.stack(
        [
            torch.stack([torch.cos(ang) / s, -torch.sin(ang) / s, tx], 1),
            torch.stack([torch.sin(ang) / s, torch.cos(ang) / s, ty], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = (F.grid_sample(y, grid, mode="bilinear", align_corners=False) > 0.5).float()
    v = (F.grid_sample(v, grid, mode="nearest", align_corners=False, padding_mode="border")).float()
    gamma = torch.exp(u(-0.3, 0.3))[:, None, None, None]
    x = x.clamp(0, 1) ** gamma
    x = (x - 0.5) * u(0.8, 1.2)[:, None, None, None] + 0.5 + u(-0.1, 0.1)[:, None, None, None]
    return x.clamp(0, 1), y, v


def _progress(epoch, b, steps_per_epoch, total_steps, train_start, budget) -> float:
    """Fraction of training done: by steps, or by time when a time limit is nearer."""
    done = (epoch * steps_per_epoch + b) / total_steps
    if budget is not None:
        done = max(done, (time.monotonic() - train_start) / budget)
    return min(done, 1.0)


def _lr(max_lr: float, progress: float) -> float:
    """Linear warm-up over the first 10%, then cosine decay to 1% of ``max_lr``."""
    if progress < 0.1:
        return max_lr * (0.1 + 0.9 * progress / 0.1)
    t = (progress - 0.1) / 0.9
    return max_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def _loss(logits, y, v):
    import torch
    import torch.nn.functional as F

    bce = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * v).sum() / v.sum()
    p = torch.sigmoid(logits) * v
    inter = (p * y).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + (y * v).sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def _val_dice(model, x, y, v) -> float:
    import torch

    model.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, len(x), 32):
            p = torch.sigmoid(model(x[start : start + 32])) > 0.5
            for pi, yi, vi in zip(p, y[start : start + 32], v[start : start + 32], strict=True):
                scores.append(dice_iou(pi.numpy(), yi.numpy() > 0.5, vi.numpy() > 0.5)[0])
    model.train()
    return float(np.mean(scores))


def _stack(pairs: list[Pair], idx: list[int], size: int):
    import torch

    loaded = [load_pair(pairs[i], size) for i in idx]
    x = torch.from_numpy(np.stack([a for a, _, _ in loaded]))[:, None].float() / 255.0
    y = torch.from_numpy(np.stack([b for _, b, _ in loaded]))[:, None].float()
    v = torch.from_numpy(np.stack([c for _, _, c in loaded]))[:, None].float()
    return x, y, v


def evaluate_pairs(model, pairs: list[Pair]) -> pd.DataFrame:
    """Dice and IoU of each pair at the mask's resolution (``ignore`` pixels left out)."""
    from cxrlab.data.images import read_gray

    rows = []
    for pair in pairs:
        gray = read_gray(pair.image)
        truth = read_mask(pair.mask, gray.shape)
        pred = segment_grays(model, [gray])[0]
        valid = None
        if pair.ignore is not None:
            valid = read_gray(pair.ignore) < 128
            if valid.shape != truth.shape:
                valid = None
        d, j = dice_iou(pred, truth, valid)
        rows.append({"image": str(pair.image), "mask": str(pair.mask), "group": pair.group,
                     "dice": d, "iou": j})  # fmt: skip
    return pd.DataFrame(rows)


def summarise(per_image: pd.DataFrame, *, confidence: float = 0.95, n_boot: int = 2000,
              seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Mean Dice and IoU with BCa bootstrap intervals (resampling patients), median and min."""
    from cxrlab.evaluation.bootstrap import bootstrap_samples, jackknife_values
    from cxrlab.evaluation.intervals import bootstrap_entry

    groups = per_image["group"].to_numpy()
    out: dict[str, Any] = {"n": int(len(per_image)), "n_groups": int(len(set(groups)))}
    for name in ("dice", "iou"):
        values = per_image[name].to_numpy(dtype=np.float64)

        def fn(w, values=values):
            return {"m": (w @ values) / w.sum(1)}

        strata = np.zeros(len(values), dtype=int)
        samples = bootstrap_samples(fn, strata, n_boot=n_boot, seed=seed, groups=groups)["m"]
        jack = jackknife_values(fn, len(values), groups)["m"]
        entry = bootstrap_entry(float(values.mean()), samples, confidence, jackknife=jack)
        entry["median"] = float(np.median(values))
        entry["min"] = float(values.min())
        out[name] = entry
    out["definitions"] = {
        "dice": "2|P and T| / (|P| + |T|) per image at the mask's resolution, then averaged",
        "iou": "|P and T| / |P or T| per image, then averaged",
        "interval": f"{confidence:.0%} BCa bootstrap over patients ({n_boot} resamples)",
    }
    return out


def train_segmenter(config: SegmentConfig) -> SegmentResult:
    """Train a U-Net from scratch on ``config.data``'s pairs; evaluate it on held-out patients."""
    import torch

    from cxrlab.config import save_config  # noqa: F401  (keeps config I/O in one place)

    start_time = time.monotonic()
    refuse_inside(config.out, config.data, "--out")
    run = RunDir(config.out)
    if run.is_finished() and not config.overwrite:
        raise RunDirError(
            f"--out {run.path} already holds a finished segmenter; pass --overwrite or another "
            "--out."
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    pairs = find_pairs(config.data)
    splits = split_pairs(pairs, val=config.val, test=config.test, seed=config.seed)
    train_idx = splits["train"][: config.limit] if config.limit else splits["train"]
    logger.info("%d pairs: %s", len(pairs), {k: len(v) for k, v in splits.items()})
    size = config.image_size
    xt, yt, vt = _stack(pairs, train_idx, size)
    xv, yv, vv = _stack(pairs, splits["val"], size)

    run.path.mkdir(parents=True, exist_ok=True)
    import yaml

    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    write_text(run.config, yaml.safe_dump(cfg, sort_keys=False))
    from cxrlab.training.environment import collect_environment

    write_json(run.environment, collect_environment(config.seed))
    which = {i: s for s, idx in splits.items() for i in idx}
    write_csv(run.split, pd.DataFrame([
        {"path": str(p.image), "mask_path": str(p.mask), "group": p.group, "split": which[i]}
        for i, p in enumerate(pairs)
    ]))  # fmt: skip

    torch.manual_seed(config.seed)
    meta = SegMeta(encoder=config.encoder, image_size=size)
    model = build_segmenter(meta)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(xt) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    # Training budget: the time limit less what loading took and the final evaluation needs.
    budget = None
    if config.time_limit is not None:
        reserve = 30 + 0.25 * len(splits["test"])  # the final evaluation at full resolution
        budget = config.time_limit * 60 - (time.monotonic() - start_time) - reserve
        budget = max(budget, 1.0)
    train_start = time.monotonic()
    gen = torch.Generator().manual_seed(config.seed)
    history, best, epoch_times = [], -1.0, []
    run.checkpoints.mkdir(exist_ok=True)
    model.train()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.monotonic()
        order = torch.randperm(len(xt), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            sel = order[b * config.batch_size : (b + 1) * config.batch_size]
            progress = _progress(epoch - 1, b, steps_per_epoch, total_steps, train_start, budget)
            if budget is not None and progress >= 1.0 and losses:
                logger.info("Time limit reached inside epoch %d (after %d batches)", epoch, b)
                break
            for group in opt.param_groups:
                group["lr"] = _lr(config.lr, progress)
            x, y, v = _augment(xt[sel], yt[sel], vt[sel], gen)
            loss = _loss(model(x), y, v)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        dice = _val_dice(model, xv, yv, vv)
        epoch_times.append(time.monotonic() - t0)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": dice,
                        "seconds": epoch_times[-1]})  # fmt: skip
        logger.info("epoch %d/%d loss %.4f val Dice %.4f (%.0f s)", epoch, config.epochs,
                    history[-1]["train_loss"], dice, epoch_times[-1])  # fmt: skip
        write_csv(run.history, pd.DataFrame(history))
        if dice > best:
            best = dice
            save_segmenter(model, run.best_checkpoint, {"epoch": epoch, "val_dice": dice})
        if budget is not None and time.monotonic() - train_start + 0.5 * epoch_times[-1] > budget:
            logger.info("Time limit: stopping after epoch %d", epoch)
            break

    from cxrlab.segment.model import load_segmenter

    best_model = load_segmenter(run.best_checkpoint)
    test_pairs = [pairs[i] for i in splits["test"]]
    t0 = time.monotonic()
    per_image = evaluate_pairs(best_model, test_pairs)
    seg_seconds = time.monotonic() - t0
    write_csv(run.predictions("test"), per_image)
    metrics = summarise(per_image, seed=config.seed)
    metrics["val_dice_best"] = best
    metrics["images_per_second_eval"] = len(test_pairs) / seg_seconds if seg_seconds else None
    write_json(run.metrics, metrics)
    seconds = time.monotonic() - start_time
    write_json(run.summary, {"epochs_run": epoch, "seconds": seconds, "best_val_dice": best,
                             "test_dice": metrics["dice"]["value"], "threads":
                             torch.get_num_threads(), "meta": meta.to_dict()})  # fmt: skip
    return SegmentResult(run.path, metrics, epoch, seconds)


def default_out(data: str | os.PathLike) -> Path:
    return Path("runs") / f"segmenter-{Path(data).name}"
