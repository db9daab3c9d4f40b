"""The logic behind tools/eval.py, demo.py, export_*.py and visualize_assign.py, where tests can reach it.

Sits beside yolox.core in the import order: it may use utils, models, data, evaluators and exp.
"""
