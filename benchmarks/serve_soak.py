"""Bounded soak of the web server on loopback: latency, status counts and memory over N requests.

Starts ``cxrlab serve`` (uvicorn, 127.0.0.1, a free port) in a subprocess, sends a fixed number
of ``POST /api/predict`` uploads from ``--parallel`` client threads (mostly valid PNG/JPEG
radiograph-sized images, ``--bad-every``-th one a broken file that must get a 400), and samples
the server's resident memory (VmRSS from /proc) after a warm-up and after every ``--chunk``
requests, so a leak shows as RSS still rising chunk after chunk rather than levelling off. The
whole run stops at ``--max-seconds`` whatever is left.

Usage (heavy: run it under the shared lock)::

    flock /work/heavy.lock python benchmarks/serve_soak.py --requests 2000 --parallel 8
    python benchmarks/serve_soak.py --model /work/runs/rdb64/checkpoints/best.ckpt

Without ``--model`` a randomly initialised ResNet-18 at 64 px (the shared run's architecture;
speed and memory do not depend on the weights) is saved to a temporary folder.
Prints one line per chunk and a summary (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_uploads(n_distinct: int, side: int, seed: int) -> list[tuple[str, bytes, str]]:
    """Distinct uploads: noisy gradients as PNG and JPEG (a radiograph's size, not its look)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    uploads = []
    for i in range(n_distinct):
        ramp = np.linspace(0, 200, side)[None, :] + rng.normal(0, 25, (side, side))
        image = Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8), "L")
        buf = io.BytesIO()
        fmt = "PNG" if i % 2 == 0 else "JPEG"
        image.save(buf, format=fmt)
        uploads.append((f"x{i}.{fmt.lower()}", buf.getvalue(), f"image/{fmt.lower()}"))
    return uploads


def default_model(folder: Path) -> Path:
    from cxrlab.models import create_classifier, save_classifier

    model = create_classifier("resnet18", ["COVID", "Normal", "Viral Pneumonia"], image_size=64)
    return save_classifier(model, folder / "resnet18-64.ckpt")


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def soak(args: argparse.Namespace) -> dict:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="cxrlab-soak-"))
    model = Path(args.model) if args.model else default_model(tmp)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "cxrlab", "serve", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu"]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uploads = make_uploads(args.distinct, args.side, args.seed)
    bad = ("broken.png", b"\x89PNG\r\n\x1a\n truncated", "image/png")
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    samples: list[dict] = []
    started = time.monotonic()
    try:
        wait_ready(base, server, 120)
        client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=args.parallel))

        def one(i: int) -> tuple[int, float]:
            upload = bad if args.bad_every and i % args.bad_every == args.bad_every - 1 else (
                uploads[i % len(uploads)]
            )  # fmt: skip
            t0 = time.perf_counter()
            try:
                status = client.post(f"{base}/api/predict", files={"file": upload}).status_code
            except httpx.HTTPError:
                status = -1  # connection error / timeout
            return status, time.perf_counter() - t0

        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(one, range(args.warmup)))
            rss_start = rss_mb(server.pid)
            samples.append({"done": 0, "rss_mb": rss_start, "seconds": 0.0})
            done, t_soak = 0, time.monotonic()
            while done < args.requests and time.monotonic() - started < args.max_seconds:
                n = min(args.chunk, args.requests - done)
                for status, seconds in pool.map(one, range(done, done + n)):
                    statuses[status] += 1
                    latencies.append(seconds)
                done += n
                sample = {"done": done, "rss_mb": rss_mb(server.pid),
                          "seconds": round(time.monotonic() - t_soak, 1)}  # fmt: skip
                samples.append(sample)
                print(f"{done:6d} requests  rss {sample['rss_mb']:.1f} MB  "
                      f"{sample['seconds']:.0f} s", flush=True)  # fmt: skip
        client.close()
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    rss = [s["rss_mb"] for s in samples]
    half = len(rss) // 2
    ms = sorted(x * 1000 for x in latencies)
    return {
        "model": str(model) if args.model else "resnet18@64 (random weights)",
        "requests": len(latencies),
        "parallel": args.parallel,
        "warmup": args.warmup,
        "bad_every": args.bad_every,
        "seconds": round(samples[-1]["seconds"], 1),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1) if ms else None,
        "max_ms": round(ms[-1], 1) if ms else None,
        "rss_after_warmup_mb": round(rss[0], 1),
        "rss_end_mb": round(rss[-1], 1),
        "rss_max_mb": round(max(rss), 1),
        # Growth in the second half of the soak: a leak keeps it positive, a plateau near 0.
        "rss_growth_second_half_mb": round(rss[-1] - rss[half], 1),
        "rss_samples_mb": [round(r, 1) for r in rss],
        "server_alive_at_end": alive,
        "server_tracebacks": stderr.decode(errors="replace").count("Traceback"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Run directory, .ckpt or .onnx (default: a ResNet-18).")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--bad-every", type=int, default=20, help="Every k-th upload is broken.")
    parser.add_argument("--distinct", type=int, default=16, help="Distinct valid uploads.")
    parser.add_argument("--side", type=int, default=1024, help="Side of the uploaded images.")
    parser.add_argument("--threads", type=int, default=2, help="Server's OMP threads.")
    parser.add_argument("--max-seconds", type=float, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON only.")
    args = parser.parse_args(argv)
    summary = soak(args)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    ok = summary["server_alive_at_end"] and not any(
        k.startswith("5") or k == "-1" for k in summary["status_counts"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
