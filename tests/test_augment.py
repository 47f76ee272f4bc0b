"""Batched augmentation: shapes, ranges, determinism, per-sample independence, no-op identity."""

import torch

from cxrlab.training.augment import AugmentParams, augment_batch

OFF = AugmentParams(rotate=0, shift=0, scale=0, hflip=False, brightness=0, contrast=0, gamma=0)


def _batch(n=8, s=32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, s, s, generator=g)


def test_disabled_augmentation_is_identity():
    x = _batch()
    out = augment_batch(x, OFF, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.clamp(0, 1))


def test_same_seed_same_output_and_range():
    x = _batch()
    a = augment_batch(x, AugmentParams(), torch.Generator().manual_seed(3))
    b = augment_batch(x, AugmentParams(), torch.Generator().manual_seed(3))
    c = augment_batch(x, AugmentParams(), torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_each_sample_gets_its_own_transform():
    x = _batch(n=1).repeat(6, 1, 1, 1)
    out = augment_batch(x, AugmentParams(rotate=20, shift=0.1), torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1])


def test_flip_only_mirrors_exactly():
    x = _batch(n=64)
    params = AugmentParams(
        rotate=0, shift=0, scale=0, hflip=True, brightness=0, contrast=0, gamma=0
    )
    out = augment_batch(x, params, torch.Generator().manual_seed(0))
    flipped = torch.isclose(out, x.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert (flipped | same).all()
    assert 10 < int(flipped.sum()) < 54
