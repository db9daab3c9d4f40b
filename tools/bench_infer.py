#!/usr/bin/env python
"""CPU inference speed per runtime: launches benchmarks/bench_infer.py with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_infer import main  # noqa: E402

if __name__ == "__main__":
    main()
