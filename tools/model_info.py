#!/usr/bin/env python
"""Print params, GFLOPs, output shape and forward time of the published YOLOX models (a real forward pass each)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.model_info import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
