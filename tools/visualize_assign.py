#!/usr/bin/env python
"""Draw what SimOTA assigns: each gt box and its positive anchor points in one colour, on the Exp's images."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.visualize_assign import main  # noqa: E402

if __name__ == "__main__":
    main()
