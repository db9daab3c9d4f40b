"""tools/train.py end to end on the bundled forest tiles: checkpoints, logs, evaluation, resume, fine-tuning,
mixed precision on the CPU, the finite-loss guard, Ctrl-C, the profile."""
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from loguru import logger

from train_helpers import (
    FOREST_EXP, TRAIN_PY, assert_state_dicts_close, load, read_metrics, run_dir, run_tool, subprocess_env,
    train_argv,
)
from yolox.tools.eval import run_eval_cli
from yolox.tools.train import run_train_cli

LOG_LINE = re.compile(
    r"epoch: \d+/\d+, iter: \d+/\d+, gpu mem: \d+Mb, mem: [\d.]+Gb, iter_time: [\d.]+s, data_time: [\d.]+s, "
    r"total_loss: [\d.]+, iou_loss: [\d.]+, l1_loss: [\d.]+, conf_loss: [\d.]+, cls_loss: [\d.]+, "
    r"lr: [\d.]+e[-+]\d+, size: \d+, ETA: \d+:\d\d:\d\d"
)


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logger.remove()
    logger.add(sys.stderr)


def test_two_epoch_run_writes_checkpoints_log_and_an_ap_that_eval_reproduces(tmp_path, forest_two_epochs):
    # the session's default two-epoch run (conftest.py; data in this process: loader workers are trained with in
    # test_killed_after_epoch_1_of_3_and_resumed_equals_the_uninterrupted_run and test_bad_input)
    trainer, folder = forest_two_epochs, forest_two_epochs.folder
    names = {p.name for p in folder.iterdir()}
    assert {"latest_ckpt.pth", "last_epoch_ckpt.pth", "best_ckpt.pth", "epoch_1_ckpt.pth", "epoch_2_ckpt.pth",
            "last_mosaic_epoch_ckpt.pth", "train_log.txt", "metrics.jsonl"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert trainer.epoch == 1 and trainer.max_epoch == 2  # the last epoch trained, 0-based, as the official loop

    log = (folder / "train_log.txt").read_text()
    assert len(LOG_LINE.findall(log)) == 2 * trainer.max_iter  # print_interval 1
    assert "---> start train epoch2" in log and "--->No mosaic aug now!" in log
    assert "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]" in log
    assert "Training of experiment is done and the best AP is" in log

    evals = [m for m in read_metrics(folder) if "AP50" in m]
    assert [m["epoch"] for m in evals] == [1, 2]
    best = load(folder / "best_ckpt.pth")
    assert best["best_ap"] == max(m["AP50_95"] for m in evals) > 0  # test_conf 1e-5: the untrained boxes score
    for key in ("model", "raw_model", "ema_updates", "optimizer", "start_epoch", "iteration", "best_ap", "rng",
                "exp", "data_seed", "input_size"):
        assert key in best, key
    assert best["ema_updates"] == best["iteration"]

    # tools/eval.py on the best checkpoint: the AP of the evaluation that made it best
    ap50_95, ap50, _ = run_eval_cli(["-f", FOREST_EXP, "-c", str(folder / "best_ckpt.pth"), "-b", "8", "-d", "1",
                                     "--conf", "1e-5", "input_size", "128,128", "test_size", "128,128",
                                     "output_dir", str(tmp_path)])
    best_eval = max(evals, key=lambda m: m["AP50_95"])
    assert ap50_95 == pytest.approx(best_eval["AP50_95"], abs=1e-4)
    assert ap50 == pytest.approx(best_eval["AP50"], abs=1e-4)


def _losses_after(metrics, iteration):
    return [(m["iteration"], m["lr"], m["total_loss"], m["iou_loss"], m["conf_loss"], m["cls_loss"], m["l1_loss"])
            for m in metrics if "lr" in m and m["iteration"] > iteration]


def test_killed_after_epoch_1_of_3_and_resumed_equals_the_uninterrupted_run(tmp_path):
    opts = dict(max_epoch=3, data_num_workers=2)
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_tool(TRAIN_PY, train_argv(full, **opts)).returncode == 0

    proc = subprocess.Popen([sys.executable, TRAIN_PY, *train_argv(killed, **opts)], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run_dir(killed) / "epoch_1_ckpt.pth"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert marker.exists()
    resumed_from = load(run_dir(killed) / "latest_ckpt.pth")["iteration"]
    assert 0 < resumed_from < 3 * load(marker)["iters_per_epoch"]

    result = run_tool(TRAIN_PY, train_argv(killed, "--resume", **opts))
    assert result.returncode == 0, result.stderr[-2000:]

    full_metrics, resumed_metrics = read_metrics(run_dir(full)), read_metrics(run_dir(killed))
    expected = _losses_after(full_metrics, resumed_from)
    got = _losses_after(resumed_metrics, resumed_from)[-len(expected):]
    assert len(expected) > 0 and [g[0] for g in got] == [e[0] for e in expected]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-5, abs=1e-6), (g, e)

    a, b = load(run_dir(full) / "latest_ckpt.pth"), load(run_dir(killed) / "latest_ckpt.pth")
    assert_state_dicts_close(a["model"], b["model"])
    assert_state_dicts_close(a["raw_model"], b["raw_model"])
    assert a["ema_updates"] == b["ema_updates"] and a["iteration"] == b["iteration"]
    assert a["best_ap"] == pytest.approx(b["best_ap"], abs=1e-6)


def test_ctrl_c_stops_between_iterations_and_the_run_resumes(tmp_path):
    proc = subprocess.Popen([sys.executable, TRAIN_PY, *train_argv(tmp_path, max_epoch=3)], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    folder = run_dir(tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (folder / "metrics.jsonl").exists() and len(read_metrics(folder)) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out
    assert "resume with --resume" in out
    latest = load(folder / "latest_ckpt.pth")
    stopped_at = latest["iteration"]
    assert stopped_at >= 3

    # the resume in this process (the stopped run above is the command's own; a new interpreter costs seconds)
    run_train_cli(train_argv(tmp_path, "--resume", max_epoch=3))
    iterations = [m["iteration"] for m in read_metrics(folder) if "lr" in m]
    assert iterations[-1] == 3 * latest["iters_per_epoch"]
    assert sorted(set(iterations)) == list(range(1, iterations[-1] + 1))  # nothing skipped, nothing twice after


def test_a_nan_loss_stops_with_its_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from yolox.core import NonFiniteLossError
    from yolox.models import YOLOXHead

    run_train_cli(train_argv(tmp_path, max_epoch=1))
    before = load(run_dir(tmp_path) / "latest_ckpt.pth")

    original = YOLOXHead.get_losses_split
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = list(original(self, *args, **kwargs))
        calls["n"] += 1
        if calls["n"] == 3:
            out[0] = out[0] * float("nan")
        return tuple(out)

    monkeypatch.setattr(YOLOXHead, "get_losses_split", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"not finite at epoch 2/2, iter 3/\d+ \(total_loss nan, iou_loss"):
        run_train_cli(train_argv(tmp_path, "--resume", max_epoch=2))
    after = load(run_dir(tmp_path) / "latest_ckpt.pth")
    assert after["iteration"] == before["iteration"]
    assert_state_dicts_close(after["raw_model"], before["raw_model"], atol=0)


@pytest.mark.parametrize("native", [True, False])
def test_fp16_on_the_cpu_trains_in_bfloat16_where_the_cpu_has_it(tmp_path, monkeypatch, native):
    """--fp16 without CUDA: bfloat16 autocast on a CPU with bfloat16 in hardware, float32 (one log line) on others."""
    import yolox.core.step as step_module

    monkeypatch.setattr(step_module, "cpu_has_native_bfloat16", lambda: native)
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(o.dtype) if isinstance(m, torch.nn.Conv2d) and m.training else None)
    try:  # at 64 px: on a CPU without bfloat16 in hardware (native=True is simulated) bfloat16 kernels are slow
        run_train_cli(train_argv(tmp_path, "--fp16", max_epoch=1, input_size="64,64", test_size="64,64",
                                 random_size="2,2"))
    finally:
        hook.remove()
    log = (run_dir(tmp_path) / "train_log.txt").read_text()
    assert log.count("bfloat16 autocast") == int(native)
    assert log.count("training in float32") == int(not native)
    assert seen and set(seen) == {torch.bfloat16 if native else torch.float32}
    assert all(m["total_loss"] == m["total_loss"] for m in read_metrics(run_dir(tmp_path)) if "lr" in m)


def test_fine_tuning_from_a_checkpoint_with_another_class_count(tmp_path):
    from yolox.exp import get_exp

    coco_model = get_exp(None, "yolox-nano").get_model()  # 80 classes, like the published yolox_nano.pth
    with torch.no_grad():
        coco_model.backbone.backbone.stem.conv.conv.weight.fill_(0.125)
    ckpt = tmp_path / "yolox_nano.pth"
    torch.save({"model": coco_model.state_dict()}, ckpt)

    trainer = run_train_cli(train_argv(tmp_path, "-c", str(ckpt), max_epoch=1, basic_lr_per_img=0.0))
    log = (run_dir(tmp_path) / "train_log.txt").read_text()
    assert "6 tensors of another shape left as initialised (another class count)" in log
    assert "head.cls_preds.0.weight" in log and "head.cls_preds.2.bias" in log
    model = trainer.model
    assert model.head.cls_preds[0].weight.shape[0] == 1
    # lr 0: the stem weights are still the checkpoint's
    assert torch.all(model.backbone.backbone.stem.conv.conv.weight == 0.125)


def test_profile_prints_every_stage_and_stops(tmp_path):
    run_train_cli(train_argv(tmp_path, "--profile", "3", max_epoch=5))
    log = (run_dir(tmp_path) / "train_log.txt").read_text()
    assert "per-stage profile: 3 iterations after 5 of warm-up" in log
    for stage in ("data wait", "preprocessing/resize", "backbone", "neck", "head forward", "assignment", "loss",
                  "backward", "optimiser step", "EMA", "logging", "total"):
        assert re.search(rf"\| {re.escape(stage)} +\| +[\d.]+ \| +[\d.]+% \|", log), stage
    assert [m["iteration"] for m in read_metrics(run_dir(tmp_path)) if "lr" in m][-1] == 8  # then it stopped


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    run_train_cli(train_argv(tmp_path, "-l", "tensorboard", max_epoch=1))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir(tmp_path) / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/lr", "train/total_loss", "train/iou_loss", "val/COCOAP50", "val/COCOAP50_95"} <= tags
