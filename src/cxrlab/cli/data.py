"""``cxrlab data inspect|split`` and ``cxrlab synth``: look at a dataset, split it, or fake one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cxrlab.cli.common import console

_KIND_TITLES = {
    "unreadable": "Unreadable files",
    "truncated": "Truncated or corrupt images",
    "not_image": "Non-image files in class folders",
    "loose_image": "Images outside any class folder",
    "empty_class": "Folders without images",
    "duplicate": "Exact duplicates (same bytes)",
    "near_duplicate": "Near duplicates (perceptual hash)",
    "mask_without_image": "Masks without an image",
    "size_mismatch": "Image/mask size mismatches",
    "empty_mask": "Empty lung masks",
    "bad_metadata": "Unreadable metadata files",
    "not_in_metadata": "Images missing from the metadata",
    "exif_oriented": "Images stored rotated (EXIF Orientation; decoded upright)",
}


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Inspect and split dataset folders (nothing is written inside them).",
        no_args_is_help=True,
    )

    @data_app.command("inspect")
    def inspect_cmd(
        data: Path = typer.Argument(..., help="Dataset folder (or a folder above it)."),
        verify: bool = typer.Option(
            True, "--verify/--no-verify", help="Decode every image fully to find truncated files."
        ),
        near_duplicates: bool = typer.Option(
            True, "--near-duplicates/--no-near-duplicates", help="Find near duplicates (phash)."
        ),
        show: int = typer.Option(10, "--show", min=0, help="Problems listed per kind."),
        problems_csv: Path | None = typer.Option(
            None, "--problems-csv", help="Also write every problem to this CSV file."
        ),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Reader threads."),
    ) -> None:
        """Count images, masks, sources, sizes and modes per class, and list every problem.

        Exits with 0 even when problems are found (they are reported); with 2 if DATA is not a
        dataset folder.
        """
        from cxrlab.data.inspect import inspect_dataset
        from cxrlab.io import refuse_inside, write_csv

        if problems_csv is not None:
            refuse_inside(problems_csv, data, "--problems-csv")
        report = inspect_dataset(
            data, verify=verify, near_duplicates=near_duplicates, workers=workers
        )
        table = Table(title=f"{report.root}")
        table.add_column("class", no_wrap=True)
        for col in report.summary.columns:
            right = col in ("images", "masks", "sources")
            table.add_column(col.replace("_", " "), justify="right" if right else "left")
        for label, row in report.summary.iterrows():
            style = "bold" if label == "total" else None
            table.add_row(str(label), *(str(v) for v in row.tolist()), style=style)
        console.print(table)

        counts = report.problem_counts()
        if not counts:
            checks = "decoded fully" if verify else "headers only"
            console.print(f"[green]No problems found[/] ({checks}).")
        for kind, n in counts.items():
            console.print(f"\n[bold yellow]{_KIND_TITLES.get(kind, kind)}[/]: {n}")
            shown = [p for p in report.problems if p.kind == kind][:show]
            for p in shown:
                console.print(f"  {p.path}\n    {p.detail}", highlight=False, soft_wrap=True)
            if n > len(shown):
                console.print(f"  ... and {n - len(shown)} more")
        conflicts = report.label_conflicts()
        if len(conflicts):
            console.print(
                f"\n[bold red]Label conflicts (the same image in two classes)[/]: {len(conflicts)}"
                " files; `cxrlab train` and `cxrlab data split` leave every copy out."
            )
            for r in conflicts.head(show).itertuples():
                console.print(f"  {r.path}\n    {r.reason}", highlight=False, soft_wrap=True)
        if problems_csv is not None:
            write_csv(problems_csv, report.problems_frame())
            console.print(f"\nProblems written to {problems_csv}")

    @data_app.command("split")
    def split_cmd(
        data: Path = typer.Argument(..., help="Dataset folder (or a folder above it)."),
        out: Path = typer.Option(..., "--out", "-o", help="split.csv to write."),
        split_by: str | None = typer.Option(
            None, "--split-by", help="stratified (default), or source (hold out whole sources)."
        ),
        method: str | None = typer.Option(None, "--method", hidden=True),
        val: float = typer.Option(0.15, help="Validation fraction."),
        test: float = typer.Option(0.15, help="Test fraction (ignored with --folds)."),
        folds: int | None = typer.Option(None, min=2, help="k-fold: number of folds."),
        fold: int = typer.Option(0, min=0, help="k-fold: the test fold."),
        seed: int = typer.Option(
            0, help="Seed of the split (`cxrlab train --seed S` splits with S unless told else)."
        ),
        near_duplicates: bool = typer.Option(
            True, "--near-duplicates/--no-near-duplicates", help="Keep near duplicates together."
        ),
        limit_per_class: int | None = typer.Option(None, min=1, help="Seeded subset per class."),
        strict: bool = typer.Option(
            False, "--strict", help="Abort on undecodable images instead of skipping them."
        ),
    ) -> None:
        """Write a leak-free split manifest (split.csv) and print its per-class counts.

        The same split as `cxrlab train --data DATA --seed SEED` with the same split options.
        Undecodable images are skipped (listed in OUT's stem + .skipped.csv) or, with --strict,
        stop the command.
        """
        from pydantic import ValidationError

        from cxrlab.config import SplitConfig
        from cxrlab.data.prepare import prepare_split
        from cxrlab.data.splits import source_coverage, split_counts
        from cxrlab.errors import ConfigError
        from cxrlab.io import refuse_inside
        from cxrlab.rundir import split_fingerprint, write_split_csv

        if method is not None and split_by not in (None, method):
            raise ConfigError(
                f"--split-by {split_by} and --method {method} disagree; --method is the old "
                "name of --split-by: pass only --split-by."
            )
        split_by = split_by or method or "stratified"
        refuse_inside(out, data, "--out")
        try:
            options = SplitConfig(
                method=split_by, val=val, test=test, folds=folds, fold=fold,
                near_duplicates=near_duplicates, seed=seed,
            )  # fmt: skip
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"Invalid split options: {problems}.") from None
        skipped_csv = out.with_name(f"{out.stem}.skipped.csv")
        prepared = prepare_split(
            data, options, strict=strict, limit_per_class=limit_per_class, skipped_csv=skipped_csv
        )
        split = prepared.manifest
        write_split_csv(out, split)
        _print_frame(split_counts(split), "images per class and split")
        if split_by == "source":
            _print_frame(source_coverage(split), "source coverage")
        if prepared.skipped_csv is not None:
            console.print(
                f"[yellow]{len(prepared.skipped)} undecodable image(s) skipped[/]; listed in "
                f"{prepared.skipped_csv}"
            )
        fingerprint = split_fingerprint(split)
        console.print(
            f"test set fingerprint {fingerprint['sha1']} ({fingerprint['n']} images, keyed by "
            f"{fingerprint['key']}); written to {out}"
        )

    @data_app.command("overlap")
    def overlap_cmd(
        folder_a: Path = typer.Argument(..., help="Candidate set (e.g. an external collection)."),
        folder_b: Path = typer.Argument(..., help="Reference set (e.g. the training data)."),
        threshold: int | None = typer.Option(
            None,
            "--threshold",
            min=0,
            max=256,
            help="Perceptual-hash distance (of 256 bits) of a near duplicate [default: 20].",
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Write every matched pair to this CSV."
        ),
        show: int = typer.Option(10, "--show", min=0, help="Pairs listed."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Reader threads."),
    ) -> None:
        """Exact and near-duplicate images of FOLDER_A found in FOLDER_B (a leakage audit)."""
        from cxrlab.data.dedupe import DEFAULT_THRESHOLD
        from cxrlab.data.overlap import overlap_folders
        from cxrlab.io import refuse_inside, write_csv

        if out is not None:
            refuse_inside(out, folder_a, "--out")
            refuse_inside(out, folder_b, "--out")
        result = overlap_folders(
            folder_a, folder_b,
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold, workers=workers,
        )  # fmt: skip
        n = result.pairs["path"].nunique()
        kinds = ", ".join(f"{v} {k}" for k, v in result.counts().items()) or "none"
        console.print(
            f"{n} of {result.n_a} images of {folder_a} match one of the {result.n_b} images of "
            f"{folder_b} (closest match: {kinds})."
        )
        for path, reason in list(result.errors.items())[:show]:
            console.print(f"[yellow]unreadable[/] {path}: {reason}")
        if len(result.pairs) and show:
            table = Table(title=f"Matched pairs (first {min(show, len(result.pairs))})")
            for col in ("path", "matched_path", "match", "distance"):
                table.add_column(col, overflow="fold")
            for row in result.pairs.head(show).itertuples():
                table.add_row(row.path, row.matched_path, row.match, str(row.distance))
            console.print(table)
        if out is not None:
            write_csv(out, result.pairs.rename(columns={"matched_split": "matched_folder"}))
            console.print(f"Pairs: [bold]{out}[/]")

    @data_app.command("download")
    def download_cmd(
        force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    ) -> None:
        """Download the COVID-19 Radiography Database from Kaggle (needs kagglehub)."""
        from cxrlab.data.download import download_database

        path = download_database(force=force)
        console.print(f"Database at [bold]{path}[/]; next: cxrlab data inspect {path}")

    app.add_typer(data_app, name="data")

    @app.command("synth")
    def synth_cmd(
        out: Path = typer.Argument(..., help="Folder to create the dataset in (empty or new)."),
        per_class: int = typer.Option(..., "--per-class", min=1, help="Images per class."),
        size: int = typer.Option(128, min=32, help="Image side in pixels."),
        seed: int = typer.Option(0, help="Random seed (same seed, same bytes)."),
        shortcut: bool = typer.Option(
            False, "--shortcut", help="Plant a class-correlated marker outside the lungs."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a dataset cxrlab synth wrote there before."
        ),
    ) -> None:
        """Write a synthetic chest X-ray dataset (4 classes, masks, metadata) for trying cxrlab."""
        from cxrlab.data.synth import synthesize

        root = synthesize(
            out, per_class=per_class, size=size, seed=seed, shortcut=shortcut, overwrite=overwrite
        )
        note = " with a planted shortcut" if shortcut else ""
        console.print(f"Wrote {per_class} synthetic images per class{note} to {root}")


def _print_frame(frame, title: str) -> None:
    table = Table(title=title)
    table.add_column(frame.index.name or "")
    for col in frame.columns:
        table.add_column(str(col).replace("_", " "), justify="right")
    for label, row in frame.iterrows():
        table.add_row(str(label), *(str(v) for v in row.tolist()))
    console.print(table)
