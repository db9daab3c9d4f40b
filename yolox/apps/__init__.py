"""The library logic behind the commands of yolox.tools, where tests and users' scripts can reach it: the Predictor
and the backend of a weights file, the demo loop over images and videos, export to ONNX / TorchScript, the pictures of
SimOTA's assignment, class names for an Exp. No command-line parsing: that is yolox.tools'.

Sits beside yolox.core in the import order: it may use utils, models, data, evaluators, deploy and exp.
"""
