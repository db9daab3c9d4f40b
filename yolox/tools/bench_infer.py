"""python -m yolox.tools.bench_infer, or tools/bench_infer.py in a clone.
CPU inference speed of PyTorch, ONNX Runtime and OpenVINO beside the official release (forward and postprocessing).

The flags: --help. This module is the one implementation; tools/bench_infer.py only launches it.
"""
from yolox.apps.bench_infer import run_bench_infer_cli
from yolox.apps.cli import run_cli

__all__ = ["main"]


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run_bench_infer_cli, argv)


if __name__ == "__main__":
    main()
