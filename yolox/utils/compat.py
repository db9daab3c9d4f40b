"""Compatibility helpers across PyTorch versions (the official `yolox.utils.meshgrid`)."""
import torch

__all__ = ["meshgrid"]


def meshgrid(*tensors):
    """torch.meshgrid with "ij" indexing (the first tensor indexes rows), without the warning of newer releases."""
    return torch.meshgrid(*tensors, indexing="ij")
