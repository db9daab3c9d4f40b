#!/usr/bin/env python
"""Detect objects in an image, a folder of images, a video or a camera; --save_result writes the drawn results."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.apps.cli import run_cli  # noqa: E402
from yolox.apps.demo_cli import run_demo_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(run_demo_cli)
