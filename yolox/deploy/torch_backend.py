"""The PyTorch backend: a YOLOX nn.Module (eval mode) behind the InferenceBackend interface."""
import itertools

import torch

from .backend import InferenceBackend

__all__ = ["TorchBackend"]


class TorchBackend(InferenceBackend):
    """Runs `model` under no_grad on its own device and dtype (a half model returns float16 outputs there).

    Any batch and input size. channels_last: the model and its inputs in channels-last memory layout (faster
    convolutions on the CPU, above all after fuse_model). A head with decode_in_inference off returns raw outputs,
    which are decoded here like an export's.
    """

    name = "torch"

    def __init__(self, model, channels_last=False, source="the PyTorch model"):
        head = getattr(model, "head", None)
        strides = getattr(head, "strides", None)
        super().__init__(source, decoded=bool(getattr(head, "decode_in_inference", True)), strides=strides,
                         num_classes=getattr(head, "num_classes", None))
        self.model = model.eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        first = next(itertools.chain(model.parameters(), model.buffers()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    def to_input(self, images):
        images = images if torch.is_tensor(images) else torch.from_numpy(images)
        images = images.to(device=self.device, dtype=self.dtype)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def run(self, images):
        with torch.no_grad():
            return self.model(images)
