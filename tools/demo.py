#!/usr/bin/env python
"""Detect objects in an image, a folder of images, a video or a camera; --save_result writes the drawn results."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.demo import main  # noqa: E402

if __name__ == "__main__":
    main()
