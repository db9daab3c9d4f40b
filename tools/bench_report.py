#!/usr/bin/env python
"""Run report cost against pycocotools on a generated COCO-val-sized problem: launches benchmarks/bench_report.py
with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_report import main  # noqa: E402

if __name__ == "__main__":
    main()
