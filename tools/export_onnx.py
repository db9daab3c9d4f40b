#!/usr/bin/env python
"""Export a YOLOX checkpoint to ONNX (see --help; the official flags)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.export_onnx import main  # noqa: E402

if __name__ == "__main__":
    main()
