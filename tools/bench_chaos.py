#!/usr/bin/env python
"""The chaos benchmark (faults and resumes of a two-process run): launches benchmarks/bench_chaos.py with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_chaos import main  # noqa: E402

if __name__ == "__main__":
    main()
