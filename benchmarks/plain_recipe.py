"""Cross-check: the issue's plain ResNet-18 recipe, as tutorials write it, on cxrlab's split.

Independent of cxrlab's training pipeline (no cache, no device augmentation, no Lightning): PIL
decode in DataLoader workers, torchvision's ``resnet18`` on 3-channel input with ImageNet
normalisation, ``RandomAffine`` (rotation 10 deg, shift 6%, zoom 10%), AdamW, one-cycle, label
smoothing 0.1, and the model after the last epoch evaluated on the test images. Only the split is
cxrlab's (:func:`cxrlab.data.prepare.prepare_split` with the run's seed, the function ``cxrlab
train`` splits with), so the test images are the ones ``recipe_sweep.py`` reports on: if this
script scores clearly higher than cxrlab with the same settings (``recipe_sweep.py --only
plain-matched``), cxrlab's pipeline loses accuracy somewhere; if not, the gap to a target lies in
the data or the recipe, not the pipeline.

    python benchmarks/plain_recipe.py --data DATA --seeds 0 1 2 [--image-size 64 --epochs 40]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class Images(torch.utils.data.Dataset):
    """Files and integer labels, decoded with PIL per item (the tutorial way)."""

    def __init__(self, files: list[str], labels: list[int], size: int, train: bool):
        from torchvision import transforms as T

        steps = [T.Resize((size, size))]
        if train:
            steps.append(T.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1)))
        steps += [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
        self.files, self.labels, self.transform = files, labels, T.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


def split_for_seed(data: Path, seed: int):
    """The train, val and test rows ``cxrlab train --seed SEED`` uses with default split options."""
    from cxrlab.config import SplitConfig
    from cxrlab.data.prepare import prepare_split

    prepared = prepare_split(data, SplitConfig(), seed=seed)
    classes = prepared.classes
    label = {c: i for i, c in enumerate(classes)}
    rows = {
        name: (part["path"].tolist(), [label[c] for c in part["label"]])
        for name, part in prepared.manifest.groupby("split")
    }
    return rows, classes


def run(args, seed: int) -> tuple[float, int]:
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    rows, classes = split_for_seed(args.data, seed)
    device = torch.device(args.device)
    loader = torch.utils.data.DataLoader(
        Images(*rows["train"], args.image_size, train=True),
        batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        persistent_workers=args.workers > 0,
    )  # fmt: skip
    model = resnet18(num_classes=len(classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * len(loader)
    )
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(**amp):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    test = torch.utils.data.DataLoader(
        Images(*rows["test"], args.image_size, train=False),
        batch_size=128, num_workers=args.workers,
    )  # fmt: skip
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast(**amp):
        for x, y in test:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct / len(test.dataset), len(test.dataset)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    accs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        acc, n = run(args, seed)
        accs.append(acc)
        print(
            f"plain-s{seed}: test accuracy {acc:.4f} (n={n})  {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    print(f"plain mean test accuracy over {len(accs)} seed(s): {np.mean(accs):.4f}")


if __name__ == "__main__":
    main()
