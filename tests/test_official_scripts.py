"""Scripts written against the official API (the flow of the official tools/train.py and tools/eval.py of release
0.3.0, with its argument names) run on this package and give what this package's own tools give."""
import argparse
import random

import pytest
import torch

from train_helpers import FOREST_EXP, read_metrics, run_dir, tiny_opts


def official_train_args(output_dir, **overrides):
    """The Namespace of the official 0.3.0 tools/train.py (its --cache is a store_true flag there)."""
    args = argparse.Namespace(experiment_name=None, name=None, dist_backend="nccl", dist_url=None, batch_size=8,
                              devices=None, exp_file=FOREST_EXP, resume=False, ckpt=None, start_epoch=None,
                              num_machines=1, machine_rank=0, fp16=False, cache=False, occupy=False, logger="tensorboard",
                              opts=tiny_opts(output_dir, **overrides))
    return args


def official_train_main(exp, args):
    """The official tools/train.py main()."""
    import torch.backends.cudnn as cudnn

    from yolox.utils import configure_nccl, configure_omp

    if exp.seed is not None:
        random.seed(exp.seed)
        torch.manual_seed(exp.seed)
    configure_nccl()
    configure_omp()
    cudnn.benchmark = True
    trainer = exp.get_trainer(args)
    trainer.train()


def run_official_train(args):
    """The official tools/train.py __main__ block, on the CPU (there -d 0: get_num_devices() is 0 without CUDA)."""
    from yolox.core import launch
    from yolox.exp import get_exp
    from yolox.utils import configure_module, get_num_devices

    configure_module()
    exp = get_exp(args.exp_file, args.name)
    exp.merge(args.opts)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    num_gpu = get_num_devices() if args.devices is None else args.devices
    assert num_gpu <= get_num_devices()
    dist_url = "auto" if args.dist_url is None else args.dist_url
    launch(official_train_main, num_gpu, args.num_machines, args.machine_rank, backend=args.dist_backend,
           dist_url=dist_url, args=(exp, args))
    return exp


@pytest.mark.parametrize("cache", [False, True])
def test_official_train_script_trains(tmp_path, cache):
    args = official_train_args(tmp_path, max_epoch=1, no_aug_epochs=0)
    args.cache = cache
    args.devices = 0 if not torch.cuda.is_available() else None
    exp = run_official_train(args)
    folder = run_dir(tmp_path)
    assert (folder / "best_ckpt.pth").is_file() and (folder / "train_log.txt").is_file()
    assert any("AP50" in row for row in read_metrics(folder))
    # release 0.3.0's --cache (True) caches in RAM inside get_data_loader
    assert exp.dataset._dataset.cache is cache


def test_official_eval_flow_gives_this_packages_ap(tmp_path, forest_one_epoch):
    """The official tools/eval.py main(): get_evaluator, load ckpt["model"], evaluate(model, is_distributed, fp16,
    trt_file, decoder, test_size) -> (*_, summary); the same AP as yolox.tools.eval's evaluation of the checkpoint.
    The checkpoint: the session's one-epoch forest run (forest_one_epoch, conftest.py), -d 1 -b 8 and
    tiny_opts(max_epoch=1, no_aug_epochs=0), as this test trained it itself before."""
    from yolox.exp import get_exp
    from yolox.utils import fuse_model, get_model_info, setup_logger

    folder = forest_one_epoch.folder
    ckpt_file = folder / "best_ckpt.pth"

    exp = get_exp(FOREST_EXP, None)
    exp.merge(tiny_opts(tmp_path))
    setup_logger(str(tmp_path), distributed_rank=0, filename="val_log.txt", mode="a")
    model = exp.get_model()
    assert get_model_info(model, exp.test_size).startswith("Params: ")
    evaluator = exp.get_evaluator(8, False, False, False)
    evaluator.per_class_AP = True
    evaluator.per_class_AR = True
    model.eval()
    ckpt = torch.load(ckpt_file, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    model = fuse_model(model)
    ap50_95, ap50, summary = evaluator.evaluate(model, False, False, None, None, exp.test_size)
    *_, summary = evaluator.evaluate(model, False, False, None, None, exp.test_size)
    assert "Average Precision" in summary
    best = max(row["AP50_95"] for row in read_metrics(folder) if "AP50_95" in row)
    assert ap50_95 == pytest.approx(best, abs=2e-3)
    assert forest_one_epoch.best_ap == pytest.approx(best, abs=1e-6)
