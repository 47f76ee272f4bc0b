"""The embedded default: synthesise a small dataset, train, evaluate and probe it in minutes."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cxrlab.config import load_config

log = logging.getLogger(__name__)

#: Demo settings: small enough for 2 CPU cores in well under 3 minutes.
DEMO_PER_CLASS = 90
DEMO_SYNTH_SIZE = 96
DEMO_IMAGE_SIZE = 64
DEMO_MODEL = "small-cnn"
DEMO_EPOCHS = 20
DEMO_REAL_LIMIT_PER_CLASS = 60


@dataclass
class DemoResult:
    """Where the demo put things and what it measured."""

    run_dir: Path
    data: Path
    synthetic: bool
    metrics: dict = field(default_factory=dict)
    probe: dict | None = None
    seconds: float = 0.0


def run_demo(
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    seed: int = 0,
    epochs: int = DEMO_EPOCHS,
    progress=None,
) -> DemoResult:
    """Run the whole pipeline on a small dataset.

    Args:
        out: Folder for the synthetic data (``out/data``) and the run (``out/run``); replaced if
            it holds an earlier demo.
        data: A real dataset folder to use instead of synthetic data (a seeded subset of
            :data:`DEMO_REAL_LIMIT_PER_CLASS` images per class is used).
        seed: The run's seed.
        epochs: Training epochs.
        progress: Optional ``progress(done, total)`` callback for image decoding.
    """
    from cxrlab.data.synth import synthesize
    from cxrlab.evaluation.evaluate import evaluate_run
    from cxrlab.explain.probe import probe_run
    from cxrlab.training import train

    start = time.perf_counter()
    out = Path(out)
    synthetic = data is None
    if synthetic:
        data = out / "data"
        if not data.exists():
            log.info(
                "Synthesising %d images per class (synthetic data, not real X-rays)", DEMO_PER_CLASS
            )
            synthesize(data, per_class=DEMO_PER_CLASS, size=DEMO_SYNTH_SIZE, seed=seed)
    config = load_config(
        data=Path(data),
        out=out / "run",
        model=DEMO_MODEL,
        image_size=DEMO_IMAGE_SIZE,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        limit_per_class=None if synthetic else DEMO_REAL_LIMIT_PER_CLASS,
        overwrite=True,
        cache_dir=out / "cache",
    )
    result = train(config, progress=progress)
    probe = probe_run(result.run_dir).to_dict()
    evaluation = evaluate_run(result.run_dir)
    return DemoResult(
        run_dir=result.run_dir,
        data=Path(data),
        synthetic=synthetic,
        metrics=evaluation.metrics["metrics"],
        probe=probe,
        seconds=time.perf_counter() - start,
    )
