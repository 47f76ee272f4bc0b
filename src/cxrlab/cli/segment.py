"""``cxrlab segment train|predict|export``: the lung segmenter."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console

segment_app = typer.Typer(help="Train and apply a lung segmenter (U-Net from scratch).",
                          no_args_is_help=True)  # fmt: skip


@segment_app.command("train")
def train_cmd(
    data: Path = typer.Option(
        ...,
        "--data",
        help="Folder with images/ and masks/ (or the database's <Class>/images + <Class>/masks).",
    ),  # fmt: skip
    out: Path = typer.Option(..., "--out", help="Segmenter run directory to write."),
    image_size: int = typer.Option(128, "--image-size", min=32, max=1024),
    encoder: str = typer.Option(
        "resnet18", "--encoder", help="segmentation-models-pytorch encoder, built from scratch."
    ),  # fmt: skip
    epochs: int = typer.Option(30, "--epochs", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    lr: float = typer.Option(2e-3, "--lr", min=0.0),
    seed: int = typer.Option(0, "--seed"),
    time_limit: float = typer.Option(
        None, "--time-limit", help="Minutes: the schedule fits them and training stops in time."
    ),  # fmt: skip
    limit: int = typer.Option(None, "--limit", help="Use at most this many training pairs."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for PyTorch."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train a U-Net on image/mask pairs; Dice and IoU on held-out patients."""
    from cxrlab.segment.train import SegmentConfig, train_segmenter

    result = train_segmenter(SegmentConfig(
        data=data, out=out, image_size=image_size, encoder=encoder, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, time_limit=time_limit, limit=limit,
        threads=threads, overwrite=overwrite,
    ))  # fmt: skip
    m = result.metrics
    console.print(
        f"{result.run_dir}: {result.epochs_run} epochs in {result.seconds / 60:.1f} min; test "
        f"n = {m['n']} images ({m['n_groups']} patients): Dice {_ci(m['dice'])}, IoU "
        f"{_ci(m['iou'])} (95% BCa over patients)",
        highlight=False,
    )


def _ci(entry: dict) -> str:
    if entry.get("ci_low") is None:
        return f"{entry['value']:.4f} (no interval: {entry.get('no_interval', 'too few images')})"
    return f"{entry['value']:.4f} [{entry['ci_low']:.4f}, {entry['ci_high']:.4f}]"


@segment_app.command("predict")
def predict_cmd(
    segmenter: Path = typer.Argument(..., help="Segmenter run directory or checkpoint."),
    files: list[Path] = typer.Argument(..., help="Image files or folders."),
    out: Path = typer.Option(..., "--out", help="Folder for masks/ and overlays/."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays"),
) -> None:
    """Write a lung mask (PNG, 0/255, at each image's size) and an overlay per image."""
    from cxrlab.segment.apply import predict_files

    result = predict_files(segmenter, files, out, overlays=overlays)
    console.print(
        f"{result.n_ok} mask(s) written to {result.masks_dir} ({result.images_per_second:.1f} "
        f"images/s){f'; {len(result.errors)} file(s) could not be read' if result.errors else ''}",
        highlight=False,
    )
    for path, reason in list(result.errors.items())[:10]:
        console.print(f"  {path}: {reason}", highlight=False)


@segment_app.command("export")
def export_cmd(
    segmenter: Path = typer.Argument(..., help="Segmenter run directory or checkpoint."),
    out: Path = typer.Option(..., "--out", help="ONNX file to write."),
) -> None:
    """Export the segmenter to ONNX (input (N,1,S,S) float32 in [0,1], output lung logits)."""
    from cxrlab.segment.apply import export_segmenter_onnx

    diff = export_segmenter_onnx(segmenter, out)
    console.print(f"Wrote {out} (max |p_onnx - p_torch| = {diff:.2g})", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment")
