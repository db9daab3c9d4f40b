#!/usr/bin/env python
"""The whole training step per SimOTA mode: launches benchmarks/bench_train.py with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_train import main  # noqa: E402

if __name__ == "__main__":
    main()
