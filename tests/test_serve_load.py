"""The web server under parallel load on loopback: a bounded loop, no 5xx, bad uploads get 400.

A short version of ``benchmarks/serve_soak.py`` (which runs 2,000 requests against a real uvicorn
process and measures memory): 100 uploads, 4 in parallel, through FastAPI's TestClient.
"""

import io
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from cxrlab.models import save_classifier


@pytest.fixture(scope="module")
def client(seed_cnn_3class, tmp_path_factory):
    from fastapi.testclient import TestClient

    from cxrlab.serve.app import create_app

    ckpt = save_classifier(seed_cnn_3class, tmp_path_factory.mktemp("serve") / "m.ckpt")
    with TestClient(create_app(ckpt, device="cpu")) as client:
        yield client


def _uploads():
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        buf = io.BytesIO()
        fmt = ("PNG", "JPEG")[i % 2]
        Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(buf, format=fmt)
        out.append((f"x{i}.{fmt.lower()}", buf.getvalue(), f"image/{fmt.lower()}"))
    out.append(("broken.png", b"\x89PNG\r\n\x1a\n cut", "image/png"))
    out.append(("notes.txt", b"not an image", "text/plain"))
    out.append(("empty.png", b"", "image/png"))
    return out


def test_parallel_requests_never_5xx(client):
    uploads = _uploads()
    n, parallel, budget = 100, 4, 240.0
    start = time.monotonic()

    def one(i):
        name, data, kind = uploads[i % len(uploads)]
        response = client.post("/api/predict", files={"file": (name, data, kind)})
        return name, response.status_code

    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, range(n)))
    assert time.monotonic() - start < budget
    statuses = Counter(status for _, status in results)
    assert sum(statuses.values()) == n
    assert all(status < 500 for status in statuses), statuses
    for name, status in results:
        bad = name in ("broken.png", "notes.txt", "empty.png")
        assert status == (400 if bad else 200), (name, status)
    assert client.get("/api/info").status_code == 200  # still serving
