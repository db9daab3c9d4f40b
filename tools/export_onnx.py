#!/usr/bin/env python
"""Export a YOLOX checkpoint to ONNX (see --help; the official flags)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.apps.cli import run_cli  # noqa: E402
from yolox.apps.export_cli import run_onnx_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(run_onnx_cli)
