#!/usr/bin/env python
"""Draw what SimOTA assigns: each gt box and its positive anchor points in one colour, on the Exp's images."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.apps.assign_vis_cli import run_assign_vis_cli  # noqa: E402
from yolox.apps.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(run_assign_vis_cli)
