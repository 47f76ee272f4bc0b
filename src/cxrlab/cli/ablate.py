"""``cxrlab ablate``: the Rahman-style preprocessing ablation (train, evaluate, McNemar vs none)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console
from cxrlab.cli.options import TrainingValues, training_options


def register(app: typer.Typer) -> None:
    @app.command("ablate")
    @training_options(exclude=("preprocess.method", "preprocess.lungs", "preprocess.segmenter"))
    def ablate_cmd(
        training: TrainingValues,
        out: Path = typer.Option(..., "--out", help="Folder for one run per variant."),
        variants: str = typer.Option(
            "none,clahe,gamma,he,lungs-crop",
            "--variants",
            help="Comma-separated: none, clahe, gamma, he, complement, bcet, letterbox, "
            "lungs-crop, lungs-mask.",
        ),  # fmt: skip
        segmenter: Path | None = typer.Option(
            None, "--segmenter", help="Lung segmenter for lungs-crop / lungs-mask."
        ),
        n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples."),
    ) -> None:
        """Train one model under each preprocessing; accuracy, macro-F1, McNemar vs none."""
        from cxrlab.cli.common import adopt_lightning_logging

        adopt_lightning_logging()
        from cxrlab.cli.train import build_train_config
        from cxrlab.training.ablation import run_ablation

        cfg = build_train_config(
            config_file=training.config_file, out=out / "none", resume=False, **training.overrides
        )
        names = [v.strip() for v in variants.split(",") if v.strip()]
        result = run_ablation(cfg, out=out, variants=names, segmenter=segmenter, n_boot=n_boot)
        console.print(result.files["md"].read_text(), highlight=False, soft_wrap=True)
        console.print(f"Wrote {result.files['json']} and {result.files['md']}")

    @app.command("preprocess-figure")
    def figure_cmd(
        image: Path = typer.Argument(..., help="One radiograph."),
        out: Path = typer.Option(..., "--out", help="Figure file (.png or .pdf)."),
        size: int = typer.Option(256, "--size", min=16, help="Side in pixels."),
        segmenter: Path | None = typer.Option(
            None, "--segmenter", help="Lung segmenter: adds the lungs crop and mask panels."
        ),
    ) -> None:
        """One image under every preprocessing, as the model would see it."""
        from cxrlab.reports.preprocess_figure import preprocess_figure

        console.print(f"Wrote {preprocess_figure(image, out, size=size, segmenter=segmenter)}")
