"""python -m yolox.tools.visualize_assign, or tools/visualize_assign.py in a clone.
Draw what SimOTA assigns on real images of the Exp's data: each gt box and its positive anchor points in one colour.

The flags: --help. This module is the one implementation; tools/visualize_assign.py only launches it.
"""
import argparse
import os

import cv2
import torch
from loguru import logger

from yolox.apps.assign_vis import assign_image, assignment_dataset, chw_to_bgr, draw_assignment
from yolox.apps.predictor import resolve_device
from yolox.exp import load_exp_weights
from yolox.tools.cli import run_cli

__all__ = ["make_parser", "run_assign_vis_cli", "main"]


def make_parser():
    parser = argparse.ArgumentParser("YOLOX assignment visualizer")
    parser.add_argument("-expn", "--experiment-name", type=str, default=None)
    parser.add_argument("-n", "--name", type=str, default=None, help="model name")
    parser.add_argument("-f", "--exp_file", default=None, type=str, help="please input your experiment description file")
    parser.add_argument("-c", "--ckpt", default=None, type=str,
                        help="checkpoint whose predictions drive the assignment (default: the initial model)")
    parser.add_argument("-b", "--batch-size", type=int, default=4, help="images per batch")
    parser.add_argument("--max-batch", type=int, default=1, help="max batch of images to visualize")
    parser.add_argument("--split", choices=("train", "val"), default="train",
                        help="images of the training set (at input_size) or the val set (at test_size)")
    parser.add_argument("--mode", choices=("loop", "packed", "batched"), default=None,
                        help="SimOTA implementation (default: the Exp's simota_mode)")
    parser.add_argument("--device", default="cpu", type=str, help="cpu or gpu")
    parser.add_argument("--output-dir", default=None, type=str,
                        help="where the pictures go (default <output_dir>/<experiment>/vis_assign)")
    parser.add_argument("opts", help="Modify config options using the command-line", default=None,
                        nargs=argparse.REMAINDER)
    return parser


def run_assign_vis_cli(argv=None):
    """Write one picture per image; returns their paths. User errors are raised (main() turns them into one log
    line and exit status 2)."""
    from yolox.exp import get_exp

    args = make_parser().parse_args(argv)
    exp = get_exp(args.exp_file, args.name)
    exp.merge(args.opts)
    if not args.experiment_name:
        args.experiment_name = exp.exp_name
    out_dir = args.output_dir or os.path.join(exp.output_dir, args.experiment_name, "vis_assign")
    os.makedirs(out_dir, exist_ok=True)

    device = resolve_device(args.device)
    model = exp.get_model()
    if args.ckpt is not None:
        load_exp_weights(model, args.ckpt, num_classes=exp.num_classes)
        logger.info(f"assignment from the predictions of {args.ckpt}")
    else:
        logger.info("no -c given: assignment from the predictions of the initial model (as at the start of training)")
    model.to(device).eval()

    dataset = assignment_dataset(exp, args.split)
    n_images = min(len(dataset), args.batch_size * args.max_batch)
    written = []
    for i in range(n_images):
        img, labels, _, img_id = dataset[i]
        img = torch.as_tensor(img)
        fg, matched, centres, strides = assign_image(model, img, labels, mode=args.mode)
        picture = draw_assignment(chw_to_bgr(img), labels, fg, matched, centres, strides)
        name = "assign_vis_{}_{}.png".format(i // args.batch_size, i % args.batch_size)
        path = os.path.join(out_dir, name)
        cv2.imwrite(path, picture)
        n_gt = int((labels.sum(1) > 0).sum())
        logger.info(f"{path}: image {int(torch.as_tensor(img_id).reshape(-1)[0])}, {n_gt} gts, "
                    f"{int(fg.sum())} positive anchors")
        written.append(path)
    return written


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_assign_vis_cli, argv)


if __name__ == "__main__":
    main()
