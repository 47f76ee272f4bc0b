"""``cxrlab train``: train one model into a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrlab.cli.common import console, progress_callback


def build_train_config(
    *,
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    split: dict | None = None,
    **options,
):
    """Merge a YAML file (or, with --resume, the run's own config.yaml) with CLI options."""
    from cxrlab.config import load_config

    base = config_file
    if resume and base is None and out is not None and (out / "config.yaml").exists():
        base = out / "config.yaml"
    return load_config(base, out=out, resume=resume or None, split=split, **options)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Path | None = typer.Option(None, "--data", help="Dataset folder."),
        model: str | None = typer.Option(
            None, "--model", help="Registered model (`cxrlab models`)."
        ),
        out: Path | None = typer.Option(None, "--out", help="Run directory to create."),
        epochs: int | None = typer.Option(None, help="Epochs (default: the model's recipe)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size per device."),
        lr: float | None = typer.Option(None, help="Peak learning rate."),
        image_size: int | None = typer.Option(None, "--image-size", help="Square input size."),
        ema_decay: float | None = typer.Option(
            None, "--ema-decay", help="Weight EMA decay, e.g. 0.998 (0: off; default: recipe)."
        ),
        seed: int | None = typer.Option(None, help="The one seed that reproduces the run."),
        limit_per_class: int | None = typer.Option(
            None, "--limit-per-class", help="Seeded subset of N images per class, for quick runs."
        ),
        split_by: str | None = typer.Option(
            None, "--split-by", help="stratified (default) or source (hold out whole sources)."
        ),
        pretrained: bool | None = typer.Option(
            None, "--pretrained/--from-scratch", help="Start from ImageNet weights (timm models)."
        ),
        accelerator: str | None = typer.Option(None, help="auto, cpu or gpu."),
        devices: str | None = typer.Option(None, help="Devices per node (int or auto)."),
        num_nodes: int | None = typer.Option(None, "--num-nodes", help="Nodes (multi-node DDP)."),
        strategy: str | None = typer.Option(None, help="Lightning strategy, e.g. ddp."),
        precision: str | None = typer.Option(None, help="auto, 32, bf16-mixed or 16-mixed."),
        compile: bool | None = typer.Option(
            None, "--compile/--no-compile", help="torch.compile the model."
        ),
        cache_dir: Path | None = typer.Option(
            None, "--cache-dir", help="Decoded-image cache folder."
        ),
        config: Path | None = typer.Option(None, "--config", help="YAML file with any option."),
        resume: bool = typer.Option(False, "--resume", help="Continue from checkpoints/last.ckpt."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run."),
        strict: bool = typer.Option(
            False, "--strict", help="Abort on corrupt images instead of skipping."
        ),
        evaluate: bool = typer.Option(
            True, "--evaluate/--no-evaluate", help="Evaluate on the test split afterwards."
        ),
    ) -> None:
        """Train a model on a dataset folder; writes a reproducible run directory."""
        from cxrlab.training import train

        cfg = build_train_config(
            config_file=config,
            out=out,
            resume=resume,
            split={"method": split_by} if split_by else None,
            data=data,
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            ema_decay=ema_decay,
            seed=seed,
            limit_per_class=limit_per_class,
            pretrained=pretrained,
            accelerator=accelerator,
            devices=int(devices) if devices and devices.isdigit() else devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=precision,
            compile=compile,
            cache_dir=cache_dir,
            overwrite=overwrite or None,
            strict=strict or None,
        )
        with progress_callback("Decoding images into the cache") as progress:
            result = train(cfg, progress=progress)
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank != 0:
            return
        score = f"{result.best_score:.4f}" if result.best_score is not None else "n/a"
        console.print(
            f"Trained [bold]{cfg.model}[/] for {result.epochs_run} epochs "
            f"in {result.seconds:.0f} s; "
            f"best {result.monitor} {score}. Run directory: [bold]{result.run_dir}[/]"
        )
        if evaluate:
            from cxrlab.cli.evaluate import evaluate_and_report

            evaluate_and_report(result.run_dir)
