#!/usr/bin/env python
"""Convert an ONNX export (tools/export_onnx.py) to an OpenVINO IR (see --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.export_openvino import main  # noqa: E402

if __name__ == "__main__":
    main()
