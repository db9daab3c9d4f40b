#!/usr/bin/env python
"""Indexing speed of a YOLO-txt split, first and cached: launches benchmarks/bench_index.py with the same flags."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_index import main  # noqa: E402

if __name__ == "__main__":
    main()
