"""DataPrefetcher: copies the next batch to the GPU on a side stream while the current one trains; on CPU a plain
iterator (nothing to overlap)."""
import torch

__all__ = ["DataPrefetcher"]


class DataPrefetcher:
    """`next()` returns (inputs, targets) of the next batch, or (None, None) when the loader is exhausted.

    With CUDA, batch k+1 is copied (non_blocking, from pinned memory) on its own stream while batch k is used;
    record_stream keeps the caching allocator from reusing those tensors' memory too early.
    """

    def __init__(self, loader, device=None):
        self.loader = iter(loader)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.use_cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.stream = torch.cuda.Stream(device=self.device) if self.use_cuda else None
        self.preload()

    def preload(self):
        try:
            self.next_input, self.next_target, _, _ = next(self.loader)
        except StopIteration:
            self.next_input = None
            self.next_target = None
            return
        if self.use_cuda:
            with torch.cuda.stream(self.stream):
                self.next_input = self.next_input.to(self.device, non_blocking=True)
                self.next_target = self.next_target.to(self.device, non_blocking=True)

    def next(self):
        if self.use_cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
        inputs, targets = self.next_input, self.next_target
        if self.use_cuda:
            if inputs is not None:
                inputs.record_stream(current)
            if targets is not None:
                targets.record_stream(current)
        self.preload()
        return inputs, targets

    def __iter__(self):
        return self

    def __next__(self):
        inputs, targets = self.next()
        if inputs is None:
            raise StopIteration
        return inputs, targets
