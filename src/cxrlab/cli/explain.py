"""``cxrlab explain`` (CAM overlays and panel) and ``cxrlab probe`` (shortcut probes)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console
from cxrlab.cli.options import Device


def register(app: typer.Typer) -> None:
    from cxrlab.config import CAM_METHODS

    @app.command("explain")
    def explain_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory written by `cxrlab train`."),
        images: list[Path] | None = typer.Option(
            None,
            "--images",
            help="Explain these image files (repeat the option) instead of a split.",
        ),
        split: str = typer.Option(
            "test", "--split", help="Split of split.csv to draw images from."
        ),
        n: int = typer.Option(
            8,
            "--n",
            min=1,
            help="Images drawn from the split (all classes, correct and incorrect).",
        ),
        method: str = typer.Option(
            "gradcam", "--method", help=f"CAM method: {', '.join(CAM_METHODS)}."
        ),
        target: str = typer.Option(
            "predicted",
            "--target",
            help="Class each map explains: predicted, true or a class name.",
        ),
        layer: str | None = typer.Option(
            None,
            "--layer",
            help="Dotted layer name inside the model (default: the model's CAM layer).",
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Output folder (default RUN_DIR/explain)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the image selection."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per CAM batch."),
        segmenter: Path | None = typer.Option(
            None,
            "--segmenter",
            help="Lung segmenter for images without a mask (lung attention ratio, pointing game).",
        ),  # fmt: skip
        device: Device = None,
    ) -> None:
        """Class activation maps of a trained model: overlays, paper panel, lung attention."""
        from cxrlab.errors import ConfigError, suggest
        from cxrlab.explain import explain_run

        if method not in CAM_METHODS:
            raise ConfigError(
                f"Unknown --method {method!r}.{suggest(method, CAM_METHODS)} "
                f"Choose one of {', '.join(CAM_METHODS)}."
            )
        result = explain_run(
            run_dir, images=[str(p) for p in images] if images else None, split=split, n=n,
            method=method, target=target, layer=layer, out=out, seed=seed, batch_size=batch_size,
            device=device, segmenter=segmenter,
        )  # fmt: skip
        console.print(f"Explained {len(result.table)} images with {method}.")
        console.print(f"Panel: [bold]{result.panel_png}[/] and {result.panel_pdf.name}")
        console.print(f"Overlays: {result.overlays[0].parent}")
        overall = result.attention["overall"]
        if overall["n"]:
            console.print(
                f"Lung attention: mean {overall['lung_ratio_mean']:.2f} of the CAM mass inside the "
                f"lungs (uniform map: {overall['lung_area_mean']:.2f}); pointing game "
                f"{overall['pointing_rate']:.0%} over {overall['n']} images with masks."
            )
        if result.attention["notice"]:
            console.print(f"Note: {result.attention['notice']}")

    @app.command("probe")
    def probe_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory written by `cxrlab train`."),
        split: str = typer.Option("test", "--split", help="Split of split.csv to probe."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
        attention: bool = typer.Option(
            True, "--attention/--no-attention", help="Grad-CAM lung attention when masks exist."
        ),
        cam_layer: str | None = typer.Option(
            None, "--layer", help="CAM layer for lung attention (default: the model's CAM layer)."
        ),
        segmenter: Path | None = typer.Option(
            None,
            "--segmenter",
            help="Lung segmenter (`cxrlab segment train`) for images "
            "without a mask in split.csv (instead of the ellipse fallback).",
        ),  # fmt: skip
        device: Device = None,
    ) -> None:
        """Shortcut probes: accuracy without the lungs, lungs only, border only, source probe."""
        from rich.table import Table

        from cxrlab.explain import probe_run

        result = probe_run(
            run_dir, split=split, batch_size=batch_size, attention=attention, device=device,
            cam_layer=cam_layer, segmenter=segmenter,
        )  # fmt: skip
        rep = result.report
        table = Table(title=f"Shortcut probes on {rep['n_images']} {split} images")
        for col in ("input", "accuracy", "95% CI", "macro-F1"):
            table.add_column(col, justify="left" if col == "input" else "right")
        chance = rep["chance"]
        table.add_row(
            f"chance (always {chance['majority_class']})",
            f"{chance['majority']:.3f}",
            "",
            f"{chance['macro_f1_majority']:.3f}",
        )
        for name, entry in [("unmodified", rep["clean"]), *rep["probes"].items()]:
            lo, hi = entry["accuracy_ci95"]
            table.add_row(name.replace("_", " "), f"{entry['accuracy']:.3f}", f"{lo:.2f}-{hi:.2f}",
                          f"{entry['macro_f1']:.3f}")  # fmt: skip
        console.print(table)
        verdict = (
            "[bold red]SHORTCUT SUSPECTED[/]"
            if result.shortcut_suspected
            else "[bold green]no shortcut flagged[/]"
        )
        console.print(verdict)
        console.print(result.summary, soft_wrap=True, highlight=False)
        counts = rep["mask_origin"]["counts"]
        console.print(
            f"Lung masks: {counts['file']} from files, {counts['segmenter']} from the segmenter, "
            f"{counts['none']} none (central ellipse fallback).",
            highlight=False,
        )
        console.print(f"Wrote {result.path}")
