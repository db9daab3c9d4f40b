"""The tests, by concept. A package so that `tests.oracles` imports from the repository root (the benchmarks use it)."""
