"""``cxrlab demo``: the whole pipeline on embedded synthetic data (or a real folder)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import adopt_lightning_logging, console, progress_callback


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        data: Path | None = typer.Option(None, "--data", help="Use a real dataset folder instead."),
        out: Path = typer.Option(Path("demo-run"), "--out", help="Where data and run go."),
        seed: int = typer.Option(0, help="Seed."),
        epochs: int = typer.Option(None, help="Training epochs (default: the demo's)."),
    ) -> None:
        """Synthesise a small dataset, train, evaluate and probe a model (a few CPU minutes)."""
        from cxrlab.demo import DEMO_EPOCHS, run_demo

        adopt_lightning_logging()

        if data is None:
            console.print(
                "[bold yellow]Demo on SYNTHETIC data:[/] procedurally drawn chest-like images, "
                "not real X-rays. Its numbers say the pipeline works, nothing about COVID-19. "
                "Use --data to run on a real folder."
            )
        with progress_callback("Decoding images into the cache") as progress:
            result = run_demo(
                out, data=data, seed=seed, epochs=epochs or DEMO_EPOCHS, progress=progress
            )
        acc = result.metrics.get("accuracy", {})
        value = acc.get("value") if isinstance(acc, dict) else acc
        line = f"test accuracy {value:.1%}" if value is not None else "no metrics"
        if isinstance(acc, dict) and acc.get("ci_low") is not None:
            line += f" (95% CI {acc['ci_low']:.1%}-{acc['ci_high']:.1%})"
        kind = "synthetic" if result.synthetic else "real"
        console.print(f"Demo finished in {result.seconds:.0f} s on {kind} data: {line}.")
        if result.probe is not None:
            console.print(f"Shortcut probe: {result.probe.get('summary', '')}")
        console.print(f"Run directory: [bold]{result.run_dir.resolve()}[/]")
