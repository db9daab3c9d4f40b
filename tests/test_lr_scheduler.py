"""LRScheduler: the yoloxwarmcos formula and the other schedules at hand-checked iterations."""
import math

import pytest

from yolox.utils import LRScheduler

IPE = 10  # iterations per epoch


def _yoloxwarmcos(**overrides):
    kwargs = dict(warmup_epochs=5, warmup_lr_start=0.001, no_aug_epochs=15, min_lr_ratio=0.05)
    kwargs.update(overrides)
    return LRScheduler("yoloxwarmcos", 0.01, IPE, 300, **kwargs)


def test_yoloxwarmcos_key_points():
    s = _yoloxwarmcos()
    lr, start, min_lr = 0.01, 0.001, 0.01 * 0.05
    warm, total, no_aug = 5 * IPE, 300 * IPE, 15 * IPE
    assert s.update_lr(0) == pytest.approx(start)
    assert s.update_lr(25) == pytest.approx((lr - start) * (25 / 50) ** 2 + start)  # quadratic warm-up
    assert s.update_lr(warm) == pytest.approx(lr)
    mid = warm + (total - warm - no_aug) / 2
    assert s.update_lr(mid) == pytest.approx((lr + min_lr) / 2)
    assert s.update_lr(total - no_aug) == pytest.approx(min_lr)
    assert s.update_lr(total - 1) == pytest.approx(min_lr)
    it = 1234
    expected = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (it - warm) / (total - warm - no_aug)))
    assert s.update_lr(it) == pytest.approx(expected)


def test_yoloxwarmcos_is_monotone_after_warmup():
    s = _yoloxwarmcos()
    lrs = [s.update_lr(i) for i in range(50, 3000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_yoloxwarmcos_without_warmup_has_no_zero_division():
    s = _yoloxwarmcos(warmup_epochs=0)
    assert s.update_lr(0) == pytest.approx(0.01)


def test_cos_warmcos_multistep():
    cos = LRScheduler("cos", 0.1, IPE, 10)
    assert cos.update_lr(0) == pytest.approx(0.1)
    assert cos.update_lr(50) == pytest.approx(0.05)
    assert cos.update_lr(100) == pytest.approx(0.0, abs=1e-12)

    warm = LRScheduler("warmcos", 0.1, IPE, 10, warmup_epochs=2, warmup_lr_start=0.0)
    assert warm.update_lr(10) == pytest.approx(0.05)  # linear warm-up
    assert warm.update_lr(20) == pytest.approx(0.1)
    assert warm.update_lr(60) == pytest.approx(0.05)  # halfway through the cosine

    step = LRScheduler("multistep", 0.1, IPE, 10, milestones=[3, 6], gamma=0.5)
    assert step.update_lr(29) == pytest.approx(0.1)
    assert step.update_lr(30) == pytest.approx(0.05)
    assert step.update_lr(60) == pytest.approx(0.025)


def test_semiwarmcos_equals_yoloxwarmcos_at_equal_pace():
    # with as many semi-supervised as normal iterations per epoch the cosine runs at the same pace
    kwargs = dict(warmup_epochs=5, warmup_lr_start=0.0, no_aug_epochs=15, min_lr_ratio=0.05)
    semi = LRScheduler("yoloxsemiwarmcos", 0.01, IPE, 300, semi_epoch=100, iters_per_epoch_semi=IPE, **kwargs)
    plain = LRScheduler("yoloxwarmcos", 0.01, IPE, 300, **kwargs)
    for it in (0, 10, 50, 500, 1000, 1500, 1999):
        assert semi.update_lr(it) == pytest.approx(plain.update_lr(it))
    assert semi.update_lr(2000) == pytest.approx(0.01 * 0.05)  # after normal + semi iterations: the minimum
    # twice as many semi iterations per epoch: each advances the cosine by half a normal iteration
    slow = LRScheduler("yoloxsemiwarmcos", 0.01, IPE, 300, semi_epoch=100, iters_per_epoch_semi=2 * IPE, **kwargs)
    assert slow.update_lr(1000 + 200) == pytest.approx(plain.update_lr(1000 + 100))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="'linear' is not supported"):
        LRScheduler("linear", 0.1, IPE, 10)
    with pytest.raises(ValueError, match="warmup_epochs"):
        LRScheduler("yoloxwarmcos", 0.1, IPE, 10, no_aug_epochs=1)
    with pytest.raises(ValueError, match="milestones"):
        LRScheduler("multistep", 0.1, IPE, 10)
    with pytest.raises(ValueError, match="iters_per_epoch"):
        LRScheduler("cos", 0.1, 0, 10)
