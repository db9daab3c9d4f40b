"""The command lines, one module per command, runnable from any folder after a pip install:
`python -m yolox.tools.<name>`.

train, eval, demo, export_onnx, export_torchscript, export_openvino, visualize_assign, plot_training and model_info:
each module holds its command's parser (make_parser) and main(argv=None), which exits 2 with one log line on a user
error (yolox.tools.cli.run_cli). The repository's tools/<name>.py are thin launchers of these same modules. The
library logic they call lives in yolox.apps, yolox.core and the packages to their left, none of which imports
yolox.tools.
"""
