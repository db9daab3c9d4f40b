"""Benchmarks of this YOLOX against the direct official algorithms and the official release: bench_assign, bench_data,
bench_train and bench_infer (run as `python benchmarks/bench_<name>.py`), their logic in the modules beside them.

They import yolox (and tests.oracles); yolox never imports them.
"""
