"""``cxrlab predict``, ``export`` and ``serve``: apply a trained model to new files."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console
from cxrlab.cli.options import TTA, Device


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        model: Path = typer.Argument(
            ..., help="Run directory, .ckpt checkpoint, .onnx file or ensemble folder."
        ),
        paths: list[Path] = typer.Argument(
            ...,
            help="Image files and/or folders (walked recursively): PNG, JPEG, TIFF, BMP, DICOM.",
        ),
        out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="CSV to write."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch."),
        device: Device = None,
        cam: Path | None = typer.Option(
            None, "--cam", help="Write a Grad-CAM overlay PNG per image into this folder."
        ),
        tta: TTA = 1,
    ) -> None:
        """Predict every image in PATHS and write one CSV row per file (errors included)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Table

        from cxrlab.cli.common import err_console
        from cxrlab.inference.files import count_input_files, predict_to_csv

        total = count_input_files(paths)
        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("Predicting", total=total)
            summary = predict_to_csv(
                model,
                paths,
                out,
                batch_size=batch_size,
                device=device,
                cam_dir=cam,
                progress=lambda done: bar.update(task, completed=done),
                tta=tta,
            )

        views = f", TTA x{summary.tta}" if summary.tta > 1 else ""
        table = Table(
            title=f"{summary.model_name} ({summary.backend}{views}): {summary.n_files} files"
        )
        table.add_column("predicted class")
        table.add_column("files", justify="right")
        for name, count in summary.counts.items():
            table.add_row(name, str(count))
        table.add_row("[red]unreadable (see `error` column)[/]", str(summary.n_errors))
        console.print(table)
        if summary.n_mask_files:
            console.print(
                f"Skipped {summary.n_mask_files} file(s) in lung-mask folders (masks/), which are "
                "not radiographs."
            )
        console.print(f"Predictions written to [bold]{summary.out}[/]")
        if summary.cam_dir is not None:
            console.print(f"CAM overlays written to [bold]{summary.cam_dir}[/]")

    @app.command("export")
    def export_cmd(
        run: Path = typer.Argument(
            ..., help="Run directory, .ckpt checkpoint, or ensemble folder (one graph)."
        ),
        onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write."),
        opset: int | None = typer.Option(
            None, "--opset", min=7, help="ONNX opset (default: the exporter's, 18 or later)."
        ),
        dynamic_batch: bool = typer.Option(
            True, "--dynamic-batch/--no-dynamic-batch", help="Symbolic batch axis."
        ),
    ) -> None:
        """Export a trained model to ONNX with its class names and input contract as metadata."""
        from cxrlab.inference.export import export_onnx

        result = export_onnx(run, onnx, opset=opset, dynamic_batch=dynamic_batch)
        console.print(
            f"Wrote [bold]{result.path}[/] (opset {result.opset}, "
            f"{'dynamic' if result.dynamic_batch else 'fixed'} batch). Input: "
            f"(N,1,S,S) float32 in [0,1], S = {result.metadata['image_size']}; output: logits "
            f"over {result.metadata['classes']}. ONNX Runtime vs PyTorch max |Δp| = "
            f"{result.max_abs_diff:.1e}."
        )

    @app.command("serve")
    def serve_cmd(
        model: Path = typer.Argument(
            ..., help="Run directory, .ckpt checkpoint, .onnx file or ensemble folder."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface (loopback by default)."),
        port: int = typer.Option(7860, "--port", min=1, max=65535),
        device: Device = None,
    ) -> None:
        """Serve a local web page to try the model on single images (research use only)."""
        from cxrlab.serve.app import serve

        serve(model, host=host, port=port, device=device)
