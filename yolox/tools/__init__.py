"""The command lines, runnable from any folder after a pip install: `python -m yolox.tools.<name>`.

train, eval, demo, export_onnx, export_torchscript, export_openvino, visualize_assign and bench_infer take the flags
of the repository's tools/<name>.py, which are thin launchers of these same modules.
"""
