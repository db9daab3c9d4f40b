"""python -m yolox.tools.check_data, or tools/check_data.py in a clone.
Check an Exp's data before training: per split the images, boxes, classes and box sizes, and the problems (changed
boxes, missing, unreadable, truncated, resized or duplicate images); labels.png and pictures of training batches.

The flags: --help. This module is the one implementation; tools/check_data.py only launches it.
"""
import argparse
import os

from loguru import logger

from yolox.tools.cli import run_cli

__all__ = ["make_parser", "run_check_data_cli", "main"]

DESCRIPTION = """\
Check an Exp's data as training reads it: per split (train at input_size, val at test_size) the images, background
images, boxes per class, box sizes, and the problems: boxes clipped or dropped, labels of unknown classes, missing,
unreadable or truncated images, images not of their annotated size, identical image files. Writes labels.png,
train_batch0-2.jpg (the first batches after Mosaic and the other augmentations) and val_batch0.jpg.
Exits with status 2 on a problem that would stop training or evaluation.

    python tools/check_data.py -f exps/example/forest/yolox_nano_forest.py
    python tools/check_data.py -f my_exp.py --output data_pictures data_dir /data/mine
"""


def make_parser():
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--exp_file", default=None, type=str, help="the Exp file (as tools/train.py -f)")
    p.add_argument("-n", "--name", type=str, default=None, help="a published model's Exp by name (yolox-s, ...)")
    p.add_argument("--output", default=None,
                   help="folder of the pictures (default: <output_dir>/<exp_name>/data_check, the run's folder)")
    p.add_argument("-b", "--batch-size", type=int, default=16,
                   help="images per training batch in the pictures (the first 16 of each are drawn)")
    p.add_argument("opts", help="Exp options as `key value` pairs, as tools/train.py takes them", default=None,
                   nargs=argparse.REMAINDER)
    return p


def _check_class_count(exp, report):
    """The Exp's num_classes against the training set's names, as the trainer checks them (a user error)."""
    train = report.splits["train"]
    if len(train.class_names) != exp.num_classes:
        raise ValueError(
            f"{train.source} has {len(train.class_names)} categories but the Exp has num_classes = {exp.num_classes}; "
            f"set `self.num_classes = {len(train.class_names)}` in the Exp file or add "
            f"`num_classes {len(train.class_names)}` to the command line"
        )


def _train_source(exp, train_dataset, batch_size):
    """The loader's dataset (Mosaic and the rest) from the Exp's own get_data_loader, around the dataset read."""
    exp.dataset = train_dataset  # no second read of the annotations; the loader wraps it as training does
    return exp.get_data_loader(batch_size=batch_size, is_distributed=False).dataset


def run_check_data_cli(argv=None):
    """Print the report's tables, log its problems, write the pictures; returns the DataReport. User errors are
    raised (main() turns them into one log line and exit status 2)."""
    from yolox.data.data_check import DATA_CHECK_DIR, check_exp_data, format_report, raise_if_fatal
    from yolox.data.data_check import write_data_pictures
    from yolox.exp import get_exp
    from yolox.utils import MatplotlibMissing

    args = make_parser().parse_args(argv)
    if args.exp_file is None and args.name is None:
        raise ValueError("give the Exp with -f <exp file> (or -n <model name>)")
    if args.batch_size < 1:
        raise ValueError(f"-b/--batch-size must be at least 1; got {args.batch_size}")
    exp = get_exp(args.exp_file, args.name)
    exp.merge(args.opts or [])
    report = check_exp_data(exp)
    _check_class_count(exp, report)
    out_dir = args.output or os.path.join(exp.output_dir, exp.exp_name, DATA_CHECK_DIR)

    print(format_report(report))
    for line in report.notes():
        logger.info(line)
    for line in report.warnings():
        logger.warning(line)
    for _, line in report.fatal()[1:]:
        logger.warning(line)  # the first becomes the command's one error line

    train = report.datasets["train"]
    missing_matplotlib = None
    try:
        write_data_pictures(out_dir, _train_source(exp, train, args.batch_size), report.datasets["val"],
                            train.class_names, args.batch_size, seed=exp.seed or 0,
                            train_labels=train._labels, img_size=train.img_size)
    except MatplotlibMissing as e:
        missing_matplotlib = e
    logger.info(f"pictures of the data in {out_dir}")
    raise_if_fatal(report)
    if missing_matplotlib is not None:
        raise missing_matplotlib
    return report


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_check_data_cli, argv)


if __name__ == "__main__":
    main()
