#!/usr/bin/env python
"""Export a YOLOX checkpoint to TorchScript (see --help; the official flags)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.export_torchscript import main  # noqa: E402

if __name__ == "__main__":
    main()
