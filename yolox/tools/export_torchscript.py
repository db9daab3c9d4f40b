"""python -m yolox.tools.export_torchscript, or tools/export_torchscript.py in a clone.
Export a checkpoint to TorchScript (the official flags); -c alone for a checkpoint of tools/train.py. The class names
and yolox_* metadata go in the file's extra file yolox_metadata.json.

The flags: --help. This module is the one implementation; tools/export_torchscript.py only launches it.
"""
import argparse

from loguru import logger

from yolox.apps.export import export_torchscript
from yolox.tools.cli import run_cli
from yolox.tools.export_onnx import add_model_arguments, build_export_model

__all__ = ["make_parser", "run_torchscript_cli", "main"]


def make_parser():
    return add_model_arguments(argparse.ArgumentParser("YOLOX torchscript deploy"), "yolox.torchscript.pt")


def run_torchscript_cli(argv=None):
    """Write the TorchScript file; returns its path. User errors are raised (main() turns them into one log line
    and exit status 2)."""
    args = make_parser().parse_args(argv)
    logger.info("args value: {}".format(args))
    exp, model = build_export_model(args)
    return export_torchscript(model, args.output_name, (args.batch_size, 3, *exp.test_size),
                              class_names=exp.class_names)


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_torchscript_cli, argv)


if __name__ == "__main__":
    main()
