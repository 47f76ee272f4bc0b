"""Training throughput: cxrlab's pipeline vs the tutorial pipeline vs the data-resident ceiling.

In one process, on the same images, model, augmentation and precision, measures training images/s
of:

(a) cxrlab end to end from PNG files: the decode-once cache (its build timed separately), then
    steady-state epochs of the real Lightning training path (uint8 batches from memory, batched
    augmentation on the device);
(b) the tutorial pipeline: PIL decode + resize + torchvision RandomAffine per image in DataLoader
    workers, float batches to the device, with cxrlab's speed switches (channels_last, and bf16
    autocast on a GPU) so that only the input pipeline differs; and (b') the same pipeline as
    tutorials write it (fp32, default memory format), which shows what the switches add;
(c) the ceiling: one uint8 batch already on the device, the same augmentation and model.

Prints all of them, the ratios, the device and the settings, ending with ``ratio_vs_tutorial``
(against (b)) and ``ratio_vs_ceiling``. With no arguments it runs on the CPU in under two minutes
on rdb-mini (or on synthetic images when rdb-mini is absent); ``--device cuda --model resnet50
--image-size 224 --batch-size 128 --workers 16 --file-size 299`` gives the GPU figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
RDB_MINI = REPO.parent / "shared" / "data" / "rdb-mini"


def find_images(data: Path | None, n: int) -> tuple[list[Path], list[int]]:
    """Up to ``n`` image paths and integer labels (files repeated to reach ``n`` if needed)."""
    from cxrlab.data.synth import synthesize

    if data is None:
        for candidate in (REPO / "devdata" / "rdb-mini", RDB_MINI):
            if candidate.exists():
                data = candidate
                break
    if data is None:
        data = Path(tempfile.mkdtemp()) / "synth"
        synthesize(data, per_class=100, size=224, seed=0)
    files = sorted(p for p in Path(data).rglob("*.png") if "/masks/" not in p.as_posix())
    classes = sorted(
        {p.parent.parent.name if p.parent.name == "images" else p.parent.name for p in files}
    )
    labels = [
        classes.index(p.parent.parent.name if p.parent.name == "images" else p.parent.name)
        for p in files
    ]
    order = np.random.default_rng(0).permutation(len(files))  # every class in any prefix
    files, labels = [files[i] for i in order], [labels[i] for i in order]
    reps = -(-n // len(files))
    return (files * reps)[:n], (labels * reps)[:n]


def _resize_file(job: tuple[Path, Path, int]) -> Path:
    from PIL import Image

    src, dst, size = job
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("L").resize((size, size), Image.Resampling.BICUBIC).save(dst)
    return dst


def resized_copies(files: list[Path], size: int, dest: Path) -> list[Path]:
    """Each distinct file rewritten as a ``size`` x ``size`` PNG under ``dest`` (same order).

    rdb-mini's files are 224 px; ``--file-size 299`` gives both pipelines files as large as the
    database's, whose PNG decode costs about (299/224)^2 = 1.8 times more.
    """
    from concurrent.futures import ProcessPoolExecutor

    distinct = list(dict.fromkeys(files))
    jobs = [(f, dest / f"{i:06d}.png", size) for i, f in enumerate(distinct)]
    with ProcessPoolExecutor() as pool:
        copies = dict(zip(distinct, pool.map(_resize_file, jobs, chunksize=16), strict=True))
    return [copies[f] for f in files]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_model(name: str, k: int, size: int, device: torch.device, switches: bool = True):
    from cxrlab.models import create_classifier

    model = create_classifier(name, [str(i) for i in range(k)], image_size=size).to(device)
    return model.to(memory_format=torch.channels_last) if switches else model


def autocast(device: torch.device, switches: bool = True):
    enabled = switches and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def bench_ceiling(args, device, k) -> float:
    """(c): a uint8 batch already on the device; same augmentation and model."""
    from cxrlab.training.augment import AugmentParams, augment_batch

    model = make_model(args.model, k, args.image_size, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    batch = torch.randint(
        0,
        255,
        (args.batch_size, args.image_size, args.image_size),
        dtype=torch.uint8,
        device=device,
    )
    y = torch.randint(0, k, (args.batch_size,), device=device)

    def step():
        x = augment_batch(batch.unsqueeze(1).float().div(255), AugmentParams(), gen)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup_steps):
        step()
    sync(device)
    steps = max(args.n_images // args.batch_size, 3)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * args.batch_size / (time.perf_counter() - start)


class TutorialDataset(torch.utils.data.Dataset):
    """What most tutorials do: PIL decode, resize and augment one image at a time."""

    def __init__(self, files, labels, size):
        from torchvision import transforms as T

        self.files, self.labels = files, labels
        self.transform = T.Compose(
            [
                T.Grayscale(1),
                T.Resize((size, size)),
                T.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1)),
                T.ColorJitter(brightness=0.1, contrast=0.1),
                T.ToTensor(),
            ]
        )

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("L")), self.labels[i]


def bench_tutorial(args, device, files, labels, k, switches: bool = True) -> float:
    """(b): the torchvision tutorial input pipeline feeding the same model; (b') without
    cxrlab's speed switches (``switches=False``)."""
    model = make_model(args.model, k, args.image_size, device, switches)
    memory_format = torch.channels_last if switches else torch.contiguous_format
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        TutorialDataset(files, labels, args.image_size),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    seen, start = 0, None
    for epoch in range(2):  # epoch 0 warms up workers and kernels
        for x, y in loader:
            if epoch == 1 and start is None:
                sync(device)
                start = time.perf_counter()
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with autocast(device, switches):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if epoch == 1:
                seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


def bench_cxrlab(args, device, files, labels, k, cache_dir) -> tuple[float, float]:
    """(a): cache build (timed) then steady-state epochs of the real Lightning training path."""
    import lightning as L

    from cxrlab.data.cache import build_cache
    from cxrlab.models import create_classifier
    from cxrlab.training.data import CachedDataModule
    from cxrlab.training.module import CxrLightningModule
    from cxrlab.training.recipes import _DEFAULTS, Recipe

    hashes = [hashlib.sha1(f"{p}:{i}".encode()).hexdigest() for i, p in enumerate(files)]
    start = time.perf_counter()
    cache = build_cache(
        files, hashes, args.image_size, cache_dir=cache_dir, workers=args.decode_workers
    )
    cache_seconds = time.perf_counter() - start
    images = cache.read()

    recipe = Recipe(**{**_DEFAULTS["modern"], "epochs": args.epochs, "batch_size": args.batch_size,
                       "image_size": args.image_size})  # fmt: skip
    splits = np.array(["train"] * len(files))
    splits[: args.batch_size] = "val"  # Lightning wants a val loader; one small batch
    dm = CachedDataModule(images, splits, np.asarray(labels), batch_size=args.batch_size, seed=0,
                          pin_memory=device.type == "cuda")  # fmt: skip
    del images  # the data module shares this array
    model = create_classifier(args.model, [str(i) for i in range(k)], image_size=args.image_size)
    module = CxrLightningModule(model, recipe, seed=0, channels_last=True)

    class Timer(L.Callback):
        """Training images/s per epoch, from the first to the last training batch: excludes the
        epoch's validation pass and start-up, as the tutorial and ceiling loops do."""

        def __init__(self):
            self.rates = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.t0, self.t_last, self.n = None, None, 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(device)
            now = time.perf_counter()
            if self.t0 is None:
                self.t0 = now  # the first batch is the reference point
            else:
                self.n += len(batch[1])
            self.t_last = now

        def on_train_epoch_end(self, trainer, pl_module):
            if self.n:
                self.rates.append(self.n / (self.t_last - self.t0))

    timer = Timer()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true",
        max_epochs=args.epochs,
        limit_train_batches=args.limit_batches,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    steady = timer.rates[1:] or timer.rates
    return float(np.median(steady)), cache_seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-images", type=int, default=256, help="images per epoch")
    p.add_argument("--epochs", type=int, default=3, help="cxrlab epochs (the first is warm-up)")
    p.add_argument("--workers", type=int, default=2, help="tutorial DataLoader workers")
    p.add_argument("--decode-workers", type=int, default=None, help="cache decode processes")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument(
        "--limit-batches",
        type=int,
        default=None,
        help="cap cxrlab batches per epoch (memory checks)",
    )
    p.add_argument("--data", type=Path, default=None)
    p.add_argument(
        "--file-size",
        type=int,
        default=None,
        help="rewrite the images at this size first (e.g. 299, the database's size)",
    )
    p.add_argument(
        "--only", choices=["all", "cxrlab", "tutorial", "plain", "ceiling"], default="all"
    )
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    files, labels = find_images(args.data, args.n_images)
    k = max(labels) + 1
    copies_dir = tempfile.TemporaryDirectory()
    if args.file_size:
        files = resized_copies(files, args.file_size, Path(copies_dir.name))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)"
    )
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(
        f"settings: model={args.model} image_size={args.image_size} batch={args.batch_size} "
        f"images/epoch={len(files)} files={args.file_size or 'as found'} px "
        f"tutorial_workers={args.workers} "
        f"precision={precision} channels_last=on"
    )
    results = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        if args.only in ("all", "cxrlab"):
            results["cxrlab"], cache_s = bench_cxrlab(args, device, files, labels, k, cache_dir)
            cache_bytes = len(files) * args.image_size**2
            print(
                f"cache build: {len(files)} images in {cache_s:.2f} s "
                f"({len(files) / cache_s:,.0f} img/s), {cache_bytes / 2**20:.1f} MiB"
            )
            print(f"(a) cxrlab end to end, steady state: {results['cxrlab']:,.1f} img/s")
        if args.only in ("all", "tutorial"):
            results["tutorial"] = bench_tutorial(args, device, files, labels, k)
            print(
                f"(b) tutorial pipeline ({args.workers} workers), same switches: "
                f"{results['tutorial']:,.1f} img/s"
            )
        if args.only in ("all", "plain"):
            results["plain"] = bench_tutorial(args, device, files, labels, k, switches=False)
            print(
                f"(b') tutorial pipeline ({args.workers} workers) as tutorials write it "
                f"(fp32, default memory format): {results['plain']:,.1f} img/s"
            )
        if args.only in ("all", "ceiling"):
            results["ceiling"] = bench_ceiling(args, device, k)
            print(f"(c) data-resident ceiling: {results['ceiling']:,.1f} img/s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS: {rss:.2f} GiB")
    if "cxrlab" in results and "plain" in results:
        print(f"ratio_vs_plain_tutorial: {results['cxrlab'] / results['plain']:.2f}")
    if "cxrlab" in results and "tutorial" in results:
        print(f"ratio_vs_tutorial: {results['cxrlab'] / results['tutorial']:.2f}")
    if "cxrlab" in results and "ceiling" in results:
        print(f"ratio_vs_ceiling: {results['cxrlab'] / results['ceiling']:.2f}")
    copies_dir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
