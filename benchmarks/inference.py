"""CPU inference throughput: PyTorch eager vs ONNX Runtime, images per second.

For each model (randomly initialised: speed does not depend on the weights) the classifier is
exported with ``cxrlab.inference.export.export_onnx`` and both back-ends are timed on the same
random (N, 1, S, S) float32 batches: warm-up runs first, then timed repeats alternating eager and
ONNX Runtime so that load from other processes hits both alike. PyTorch runs under
``torch.inference_mode()``; both use the same thread count (one per available core by default),
ONNX Runtime with full graph optimisation (``ORT_ENABLE_ALL``: constant folding, Conv+BN+ReLU
fusion, NCHWc layouts). The median time per batch is reported.

Usage::

    python benchmarks/inference.py                      # resnet18@224 and seed-cnn@299, b1 and b32
    python benchmarks/inference.py --repeats 10 --threads 2

The last line is ``ratio_onnx_vs_eager_b32: X.XX`` (resnet18, batch 32); the seed-cnn ratio is
printed just before it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bench_model(name: str, size: int, batches: list[int], args, workdir: Path) -> list[dict]:
    import onnxruntime as ort
    import torch

    from cxrlab.inference.export import export_onnx
    from cxrlab.inference.predictor import session_options
    from cxrlab.models import create_classifier

    torch.manual_seed(0)
    model = create_classifier(name, ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"],
                              image_size=size).eval()  # fmt: skip
    onnx_path = export_onnx(model, workdir / f"{name}.onnx", opset=args.opset).path
    options = session_options(args.threads)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.random((batch, 1, size, size), dtype=np.float32)
        xt = torch.from_numpy(x)

        def eager(xt=xt):
            with torch.inference_mode():
                return model(xt)

        def onnx(x=x):
            return session.run(None, {input_name: x})

        # Same answers before timing anything.
        diff = float(np.abs(eager().numpy() - onnx()[0]).max())
        for fn in (eager, onnx):
            for _ in range(args.warmup):
                fn()
        t_eager, t_onnx = [], []
        start = time.perf_counter()
        while len(t_eager) < args.repeats or time.perf_counter() - start < args.min_seconds:
            for fn, bucket in ((eager, t_eager), (onnx, t_onnx)):
                t0 = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - t0)
            if len(t_eager) >= 10 * args.repeats:
                break
        med_e, med_o = statistics.median(t_eager), statistics.median(t_onnx)
        rows.append({
            "model": name, "size": size, "batch": batch,
            "eager_ips": batch / med_e, "onnx_ips": batch / med_o, "ratio": med_e / med_o,
            "eager_ms": 1000 * med_e, "onnx_ms": 1000 * med_o, "n": len(t_eager),
            "max_logit_diff": diff,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["resnet18:224", "seed-cnn:299"],
        help="NAME:SIZE pairs (resnet18 must be among them for the last line)",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument(
        "--threads",
        type=int,
        default=_cores(),
        help="torch threads = ONNX Runtime intra-op threads (default: cores)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per back-end, at least")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="keep timing until this long has passed (per model and batch size)",
    )
    parser.add_argument("--opset", type=int, default=None)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    load0 = os.getloadavg()
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{ort.__version__} ({args.threads} intra-op threads, ORT_ENABLE_ALL), "
        f"{_cores()} cores; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-") as tmp:
        for spec in args.models:
            name, _, size = spec.partition(":")
            rows += bench_model(name, int(size or 224), args.batch_sizes, args, Path(tmp))

    header = (
        f"{'model':<10} {'size':>4} {'batch':>5} {'eager img/s':>12} {'onnx img/s':>11} "
        f"{'onnx/eager':>10} {'eager ms':>9} {'onnx ms':>9} {'runs':>5} {'max|dlogit|':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<10} {r['size']:>4} {r['batch']:>5} {r['eager_ips']:>12.1f} "
            f"{r['onnx_ips']:>11.1f} {r['ratio']:>10.2f} {r['eager_ms']:>9.1f} "
            f"{r['onnx_ms']:>9.1f} {r['n']:>5} {r['max_logit_diff']:>11.1e}"
        )
    load1 = os.getloadavg()
    print(f"load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")

    def ratio(model: str) -> float | None:
        found = [r["ratio"] for r in rows if r["model"] == model and r["batch"] == 32]
        return found[0] if found else None

    for model in {r["model"] for r in rows} - {"resnet18"}:
        if ratio(model) is not None:
            print(f"ratio_onnx_vs_eager_b32_{model}: {ratio(model):.2f}")
    if ratio("resnet18") is not None:
        print(f"ratio_onnx_vs_eager_b32: {ratio('resnet18'):.2f}")


if __name__ == "__main__":
    main()
