#!/usr/bin/env python
"""Check an Exp's data before training: statistics and problems per split, labels.png and batch pictures.

    python tools/check_data.py -f exps/example/forest/yolox_nano_forest.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.check_data import main  # noqa: E402

if __name__ == "__main__":
    main()
