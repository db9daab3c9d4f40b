"""The trainer's parts: EMA, meters, atomic saves, RNG states, seeds, BN all-reduce, CPU thread shares, the step's
speed-ups (channels_last, split head outputs, fused SGD) giving the official numbers, the profile clock, the curve."""
import copy
import io
import math
import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import free_port
from yolox.core.stage_profile import STAGES, StageClock, profile_table, stage_hooks
from yolox.core.step import TrainStep
from yolox.exp import get_exp
from yolox.utils import (
    MeterBuffer, ModelEMA, all_reduce_norm, atomic_save, cpu_threads_per_process, get_rng_states, mix_seed,
    plot_training_curve, read_run_metrics, seeded_python_and_numpy, set_rng_states,
)


def _nano(**overrides):
    exp = get_exp(None, "yolox-nano")
    for k, v in overrides.items():
        setattr(exp, k, v)
    torch.manual_seed(0)
    return exp, exp.get_model()


def _batch(size=128, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(b, 3, size, size, generator=g) * 255
    targets = torch.zeros(b, 20, 5)
    for i in range(b):
        n = 4 + i
        targets[i, :n, 1:3] = 16 + torch.rand(n, 2, generator=g) * (size - 32)
        targets[i, :n, 3:5] = 8 + torch.rand(n, 2, generator=g) * 24
    return imgs, targets


def test_ema_matches_the_official_formula():
    _, model = _nano()
    ema = ModelEMA(model, 0.9998)
    reference = copy.deepcopy(ema.ema.state_dict())
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
            for name, buf in model.named_buffers():
                if buf.is_floating_point():
                    buf.add_(0.1)
            if step == 2:
                # .to() and reassignments replace buffers of both models: the update must follow the new tensors
                bn = model.backbone.backbone.stem.conv.bn
                bn.running_mean = bn.running_mean + 1.0
                ema_bn = ema.ema.backbone.backbone.stem.conv.bn
                ema_bn.running_var = ema_bn.running_var.clone()
        ema.update(model)
        d = 0.9998 * (1 - math.exp(-step / 2000))
        current = model.state_dict()
        for k, v in reference.items():
            if v.is_floating_point():
                v.mul_(d).add_((1 - d) * current[k])
        state = ema.ema.state_dict()
        for k, v in reference.items():
            assert torch.allclose(state[k], v, atol=1e-6), k
    assert ema.updates == 3
    with pytest.raises(ValueError, match="modules differ"):
        ema.update(torch.nn.Linear(2, 2))
    assert not any(p.requires_grad for p in ema.ema.parameters()) and not ema.ema.training
    restored = ModelEMA(model, 0.9998)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3 and all(torch.equal(a, b) for a, b in zip(
        restored.ema.state_dict().values(), ema.ema.state_dict().values()))


def test_meter_buffer_windows_and_floats():
    meters = MeterBuffer(window_size=3)
    for v in range(1, 6):
        meters.update(iter_time=float(v), total_loss=torch.tensor(v * 2.0))
    assert meters["iter_time"].avg == 4.0 and meters["iter_time"].global_avg == 3.0
    assert meters["total_loss"].latest == 10.0 and isinstance(meters["total_loss"].latest, float)
    assert meters["iter_time"].median == 4.0
    assert set(meters.get_filtered_meter("time")) == {"iter_time"}
    meters.clear_meters()
    assert meters["iter_time"].latest is None and meters["iter_time"].global_avg == 3.0


def test_atomic_save_keeps_the_previous_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "latest_ckpt.pth"
    atomic_save({"model": {"w": torch.ones(3)}, "iteration": 1}, path)

    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # a kill or Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"model": {"w": torch.zeros(3)}, "iteration": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    kept = torch.load(path, weights_only=True)
    assert kept["iteration"] == 1 and torch.equal(kept["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["latest_ckpt.pth"]  # no temporary file left behind


def test_rng_states_round_trip_through_a_weights_only_checkpoint():
    states = get_rng_states()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    buffer = io.BytesIO()
    torch.save({"rng": states}, buffer)
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_mix_seed_and_scoped_seeding():
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
    assert len({mix_seed(7, k) for k in range(1000)}) == 1000 and 0 <= mix_seed(2**70, -1) < 2**63
    random.seed(5)
    outer = random.getstate()
    with seeded_python_and_numpy(42):
        a = (random.random(), np.random.rand())
    assert random.getstate() == outer
    with seeded_python_and_numpy(42):
        assert (random.random(), np.random.rand()) == a


def test_cpu_processes_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [cpu_threads_per_process(n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]


def _all_reduce_worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        bn = torch.nn.BatchNorm2d(3)
        bn.running_mean.fill_(float(rank))  # rank 0: 0, rank 1: 1
        bn.running_var.fill_(2.0 + 2 * rank)
        all_reduce_norm(bn)
        torch.save((bn.running_mean.clone(), bn.running_var.clone()), f"{out}{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_norm_averages_bn_statistics(tmp_path):
    out = str(tmp_path / "bn")
    mp.spawn(_all_reduce_worker, args=(free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        mean, var = torch.load(f"{out}{rank}.pt", weights_only=True)
        assert torch.allclose(mean, torch.full((3,), 0.5)) and torch.allclose(var, torch.full((3,), 3.0))


def test_channels_last_and_split_head_outputs_give_the_official_losses_and_outputs():
    imgs, targets = _batch()
    _, fast = _nano()  # channels_last, outputs kept apart in training
    reference = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    assert fast.backbone.backbone.stem.conv.conv.weight.is_contiguous(memory_format=torch.channels_last)
    out_fast = fast(imgs, targets)

    # the official path: NCHW, the (B, A, 5 + K) concatenation of every level, then the loss on its slices
    head = reference.head
    fpn = reference.backbone(imgs)
    levels, shapes = [], []
    for k, (x, stride) in enumerate(zip(fpn, head.strides)):
        reg, obj, cls = head._level_outputs(k, x)
        levels.append(torch.cat([reg, obj, cls], 1))
        shapes.append((x.shape[-2], x.shape[-1], stride))
    outputs = torch.cat([x.flatten(start_dim=2) for x in levels], dim=2).permute(0, 2, 1)
    ref_losses = head.get_losses(outputs, targets, head.anchor_grid(shapes, outputs.device))
    for k, ref in zip(("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss", "num_fg"), ref_losses):
        assert torch.allclose(torch.as_tensor(out_fast[k]), torch.as_tensor(ref), rtol=1e-4, atol=1e-5), k

    fast.eval()
    reference.eval()
    with torch.no_grad():
        assert torch.allclose(fast(imgs), reference(imgs), rtol=1e-4, atol=1e-3)


def test_fused_sgd_steps_like_the_per_tensor_loop():
    exp, model = _nano()
    twin = copy.deepcopy(model)
    fast = exp.get_optimizer(8)
    assert fast.defaults.get("fused") or fast.defaults.get("foreach")
    exp_ref, _ = _nano()
    exp_ref.model = twin
    slow = exp_ref.get_optimizer(8)
    for group in slow.param_groups:
        group["fused"], group["foreach"] = False, False
    for opt in (fast, slow):
        for group in opt.param_groups:
            group["lr"] = 0.01
    imgs, targets = _batch()
    for _ in range(2):
        for m, opt in ((model, fast), (twin, slow)):
            opt.zero_grad()
            m(imgs, targets)["total_loss"].backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_step_and_profile_clock_charge_every_stage():
    exp, model = _nano()
    optimizer = exp.get_optimizer(2)
    clock = StageClock("cpu")
    step = TrainStep(model, optimizer, None, ModelEMA(model, 0.9998), clock=clock)
    imgs, targets = _batch()
    with stage_hooks(model, clock):
        for i in range(3):
            clock.recording = i > 0
            clock.start()
            clock.mark("data wait")
            values = step(imgs, targets)
            clock.end_iteration()
    assert "get_assignments" not in vars(model.head)  # the hook is gone again
    assert set(values) == {"total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss", "num_fg"}
    per_stage = clock.per_iteration_ms()
    assert clock.iterations == 2 and list(per_stage) == list(STAGES)
    for stage in ("backbone", "neck", "head forward", "assignment", "loss", "backward", "optimiser step", "EMA"):
        assert per_stage[stage] > 0, stage
    table = profile_table(per_stage, "title")
    assert table.startswith("title") and "| total" in table and "100.0%" in table


def test_step_refuses_a_non_finite_loss_before_touching_the_weights():
    from yolox.core import NonFiniteLossError

    exp, model = _nano()
    step = TrainStep(model, exp.get_optimizer(2))
    imgs, targets = _batch()
    imgs[0, 0, 0, 0] = float("nan")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(NonFiniteLossError, match="not finite"):
        step(imgs, targets)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if not k.endswith("running_mean")
               and not k.endswith("running_var") and "num_batches" not in k)


def test_training_curve_from_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    metrics = tmp_path / "metrics.jsonl"
    lines = []
    for it in range(1, 41):
        lines.append({"iteration": it, "lr": 0.01, "total_loss": 10 - it / 5, "iou_loss": 3.0, "conf_loss": 2.0,
                      "cls_loss": 1.0, "l1_loss": 0.0})
        if it % 10 == 0:
            lines.append({"iteration": it, "epoch": it // 10, "AP50": it / 50, "AP50_95": it / 100})
    lines.append(dict(lines[-1], AP50=0.9))  # a resumed run repeats an iteration: the last record wins
    metrics.write_text("\n".join(__import__("json").dumps(r) for r in lines))
    train, evals = read_run_metrics(metrics)
    assert len(train) == 40 and [e["iteration"] for e in evals] == [10, 20, 30, 40] and evals[-1]["AP50"] == 0.9
    out = plot_training_curve(metrics, tmp_path / "curve.png")
    assert os.path.getsize(out) > 10000


def test_cli_flags_keep_the_official_forms():
    from yolox.tools.train import parse_args

    args = parse_args(["-f", "x.py", "--cache", "max_epoch", "10"])  # --cache alone, then Exp options
    assert args.cache == "ram" and args.opts == ["max_epoch", "10"]
    args = parse_args(["-f", "x.py", "--cache", "disk", "-b", "16", "--fp16", "-expn", "run", "-e", "3", "--resume",
                       "--num_machines", "2", "--machine_rank", "1", "--dist-url", "tcp://h:1", "-o", "-l",
                       "tensorboard", "-c", "c.pth", "-d", "2"])
    assert (args.cache, args.batch_size, args.fp16, args.experiment_name, args.start_epoch, args.resume) == \
        ("disk", 16, True, "run", 3, True)
    assert (args.num_machines, args.machine_rank, args.dist_url, args.occupy, args.logger, args.ckpt,
            args.devices) == (2, 1, "tcp://h:1", True, "tensorboard", "c.pth", 2)
    assert parse_args(["-f", "x.py"]).cache is None
