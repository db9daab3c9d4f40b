"""A pure-PyTorch YOLOX training framework, compatible with the official release's Exp files and checkpoints."""
__version__ = "0.1.0"
