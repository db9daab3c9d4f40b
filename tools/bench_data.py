#!/usr/bin/env python
"""Mosaic/MixUp throughput, fast vs direct official: launches benchmarks/bench_data.py with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_data import main  # noqa: E402

if __name__ == "__main__":
    main()
