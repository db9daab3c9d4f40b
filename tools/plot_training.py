#!/usr/bin/env python
"""Draw the training curve (losses and AP per evaluation against the iteration) of a run from its metrics.jsonl.

    python tools/plot_training.py YOLOX_outputs/yolox_nano_forest            # writes training_curve.png there
    python tools/plot_training.py YOLOX_outputs/yolox_nano_forest -o curve.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.plot_training import main  # noqa: E402

if __name__ == "__main__":
    main()
