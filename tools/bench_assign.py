#!/usr/bin/env python
"""SimOTA modes' speed, memory and host syncs: launches benchmarks/bench_assign.py with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_assign import main  # noqa: E402

if __name__ == "__main__":
    main()
