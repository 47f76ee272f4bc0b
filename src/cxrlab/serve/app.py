"""A local web page for trying a trained model on single images (FastAPI + one static page).

``GET /`` serves a self-contained page (no external assets) where a researcher drops or selects a
PNG, JPEG, TIFF or DICOM file and sees the class probabilities as bars, the image the model saw,
and the Grad-CAM overlay when :mod:`cxrlab.explain.cam` is available, under a banner stating that
the page is for research use only. ``POST /api/predict`` (multipart, field ``file``) returns JSON;
an unreadable file gives HTTP 400 with the reason. ``GET /api/info`` describes the model.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import HTMLResponse

from cxrlab.data.dicom import DICOM_SUFFIXES
from cxrlab.data.images import IMAGE_SUFFIXES, decode_many
from cxrlab.errors import ImageReadError
from cxrlab.inference.predictor import Device, load_predictor, to_unit_batch

logger = logging.getLogger(__name__)

#: Shown on the page and returned with every prediction.
DISCLAIMER = "For research use only — not for clinical diagnosis"

#: Uploads larger than this are refused with HTTP 413.
DEFAULT_MAX_UPLOAD_MB = 64

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def create_app(
    model_path: Any,
    *,
    device: Device | str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
) -> FastAPI:
    """Build the FastAPI application serving one model.

    Args:
        model_path: Run directory, ``.ckpt`` or ``.onnx`` (or a loaded classifier/predictor).
        device: ``"cpu"``, ``"cuda"`` or ``None``.
        max_upload_mb: Largest accepted upload in MiB.

    Returns:
        A FastAPI app; run it with uvicorn or test it with ``TestClient``.

    Raises:
        CheckpointError: The model cannot be loaded.
    """
    predictor = load_predictor(model_path, device=device)
    cam_fns, cam_message = _cam_support(predictor)
    lock = threading.Lock()  # one request at a time on the model (CAM hooks are not re-entrant)
    page = resources.files("cxrlab.serve").joinpath("static/index.html").read_text("utf-8")
    info = {
        "model_name": predictor.model_name,
        "classes": list(predictor.classes),
        "image_size": predictor.image_size,
        "backend": predictor.backend,
        "cam_available": cam_fns is not None,
        "cam_message": cam_message,
        "disclaimer": DISCLAIMER,
    }

    app = FastAPI(title="cxrlab", description=DISCLAIMER, docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def api_info() -> dict[str, Any]:
        return info

    @app.post("/api/predict")
    def api_predict(file: UploadFile = File(...)) -> dict[str, Any]:
        name = Path(file.filename or "upload").name
        data = file.file.read(max_upload_mb * 2**20 + 1)
        if len(data) > max_upload_mb * 2**20:
            raise HTTPException(
                413, f"{name} is larger than {max_upload_mb} MiB; downscale it first."
            )
        if not data:
            raise HTTPException(400, f"{name} is empty (0 bytes); choose an image file.")
        try:
            gray = _decode_upload(name, data, predictor.image_size, predictor.preprocess)
        except ImageReadError as exc:
            reason = exc.reason
            raise HTTPException(
                400,
                f"{name} could not be read as an image: {reason}. Upload a PNG, JPEG, TIFF, BMP "
                "or DICOM chest X-ray.",
            ) from None
        with lock:
            probs = predictor.predict_images(gray[None])[0][0]
            cam_url = None
            if cam_fns is not None:
                try:
                    cam_url = _png_url(_cam_overlay(predictor, cam_fns, gray))
                except Exception:  # a CAM failure must not hide the prediction
                    logger.exception("CAM failed for %s", name)
        predicted = predictor.classes[int(np.argmax(probs))]
        if cam_fns is None:
            message = cam_message
        elif cam_url is None:
            message = "CAM unavailable: computing it failed (see the server log)."
        else:
            message = ""
        return {
            "filename": name,
            "predicted": predicted,
            "probabilities": {c: float(p) for c, p in zip(predictor.classes, probs, strict=True)},
            "classes": list(predictor.classes),
            "image": _png_url(gray),
            "cam": cam_url,
            "cam_message": message,
            "disclaimer": DISCLAIMER,
        }

    return app


def serve(
    model_path: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: Device | str | None = None,
) -> None:
    """Serve the page with uvicorn until interrupted (loopback only by default)."""
    import uvicorn

    if host not in _LOOPBACK:
        logger.warning(
            "Serving on %s makes the model reachable from other machines; this page has no "
            "authentication and is %s.",
            host,
            DISCLAIMER.lower(),
        )
    app = create_app(model_path, device=device)
    logger.info("Open http://%s:%d/ in a browser (Ctrl+C stops the server).", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _decode_upload(name: str, data: bytes, size: int, preprocess=None) -> np.ndarray:
    """Decode an upload via a private temporary file (the readers sniff suffix and magic).

    Through :func:`cxrlab.data.images.decode_many`, the decode loop of every other caller.

    Raises:
        ImageReadError: The upload is not a usable image (the reason names why).
    """
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES | DICOM_SUFFIXES:
        suffix = ""  # let the readers sniff the content
    fd, tmp = tempfile.mkstemp(prefix="cxrlab-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        decoded = decode_many([tmp], size, workers=1, preprocess=preprocess)
        if not decoded.ok[0]:
            raise ImageReadError(name, decoded.errors[0])
        return decoded.images[0]
    finally:
        Path(tmp).unlink(missing_ok=True)


def _cam_support(predictor) -> tuple[tuple[Any, Any] | None, str]:
    if predictor.backend == "ensemble":
        return None, (
            "CAM unavailable for an ensemble (no single model's map explains the average); "
            "serve one member's run directory to see its CAM."
        )
    if predictor.backend != "torch":
        return None, "CAM unavailable: ONNX models have no gradients; serve the run directory."
    try:
        from cxrlab.explain.cam import compute_cams, overlay
    except ImportError:
        return None, "CAM unavailable: cxrlab.explain.cam is not installed in this version."
    return (compute_cams, overlay), ""


def _cam_overlay(predictor, cam_fns, gray: np.ndarray) -> np.ndarray:
    compute_cams, overlay = cam_fns
    cams = compute_cams(
        predictor.model,
        predictor.to_tensor(to_unit_batch(gray[None])),
        method="gradcam",
        target="predicted",
    )
    return overlay(gray, np.asarray(cams)[0])


def _png_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
