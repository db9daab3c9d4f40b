#!/usr/bin/env python
"""Deployment on the CPU in one table (AP and latency per backend and precision): launches benchmarks/bench_deploy.py with the same flags (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from benchmarks.bench_deploy import main  # noqa: E402

if __name__ == "__main__":
    main()
