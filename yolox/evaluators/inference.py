"""The inference pass shared by the evaluators: a model or a deployment backend over a loader, timed forward and
NMS, results on rank 0."""
import copy
import itertools

import torch
import torch.distributed as dist
from loguru import logger
from tqdm import tqdm

from yolox.deploy import InferenceBackend, TorchBackend
from yolox.utils import gather, get_world_size, is_main_process, time_synchronized

__all__ = ["model_device", "InferenceStats", "run_inference", "scale_to_original", "image_id"]


def model_device(model):
    """The device of the model's first parameter (or buffer); CPU for a model that has neither."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


class InferenceStats:
    """Summed forward and NMS seconds over the timed batches, and how many batches were timed."""

    def __init__(self, forward_s=0.0, nms_s=0.0, timed_batches=0, batch_size=1):
        self.forward_s = forward_s
        self.nms_s = nms_s
        self.timed_batches = timed_batches
        self.batch_size = batch_size

    def reduce(self, device):
        """Sum the timings of every process onto rank 0 (each process timed its own share of the loader)."""
        if get_world_size() == 1:
            return self
        t = torch.tensor([self.forward_s, self.nms_s, float(self.timed_batches)], dtype=torch.float64, device=device)
        dist.reduce(t, dst=0)
        return InferenceStats(t[0].item(), t[1].item(), int(t[2].item()), self.batch_size)

    def time_info(self):
        """The official log line: average forward, NMS and inference milliseconds per image."""
        images = max(self.timed_batches, 1) * self.batch_size
        fwd, nms = 1000 * self.forward_s / images, 1000 * self.nms_s / images
        return ", ".join(
            "Average {} time: {:.2f} ms".format(k, v) for k, v in zip(["forward", "NMS", "inference"], [fwd, nms, fwd + nms])
        )


def image_id(value):
    """An image id from a collated batch entry (python int, 0-d or 1-element tensor or array)."""
    if torch.is_tensor(value):
        return int(value.reshape(-1)[0].item())
    try:
        return int(value)
    except TypeError:
        return int(list(value)[0])


def scale_to_original(boxes, img_h, img_w, img_size):
    """Undo the letterbox resize: boxes (N, 4) at the network input scale -> original image pixels."""
    scale = min(img_size[0] / float(img_h), img_size[1] / float(img_w))
    return boxes / scale


def run_inference(model, dataloader, num_classes, confthre, nmsthre, half=False, decoder=None, on_batch=None,
                  distributed=False):
    """Run `model` over `dataloader`; call on_batch(outputs, info_imgs, ids) on each batch.

    model: an nn.Module (run in eval mode on its device, in a half-precision copy with half on CUDA) or an
    InferenceBackend (yolox.deploy: ONNX Runtime, OpenVINO, ...; `half` does not apply to it). An export with NMS in
    its graph returns its detections itself (its "NMS time" is then only their filtering at a higher confthre; a
    lower confthre or another nmsthre than the file's is warned about once: see InferenceBackend.postprocess).
    outputs is the post-processed list, one (n, 7) float32 CPU tensor (x1, y1, x2, y2, obj, cls_conf, cls) or None
    per image. Returns the per-process results of on_batch (a list) gathered to rank 0 (flattened, [] elsewhere)
    and the InferenceStats summed on rank 0. The last batch is not timed (it may be short), as in the official
    evaluator; a loader of one batch times that batch.
    """
    backend = model if isinstance(model, InferenceBackend) else _torch_backend(model, half)
    if decoder is not None and backend.nms is not None:
        raise ValueError(f"{backend.source} has NMS in its graph and returns detections: there is nothing to decode; "
                         "evaluate it without a decoder")
    if decoder is not None:  # the official hook: raw outputs, decoded by `decoder`
        backend.decoded = True
    device = getattr(backend, "device", torch.device("cpu"))

    n_batches = len(dataloader)
    stats = InferenceStats(batch_size=getattr(dataloader, "batch_size", None) or 1)
    results = []
    progress = tqdm(dataloader, desc="eval", leave=False) if is_main_process() else dataloader
    with torch.no_grad():
        for cur_iter, (imgs, _, info_imgs, ids) in enumerate(progress):
            timed = cur_iter < n_batches - 1 or n_batches == 1
            imgs = backend.to_input(imgs)
            start = time_synchronized()
            outputs = backend(imgs)  # (B, A, 5 + K) decoded boxes (an NMS export: its detections already)
            if decoder is not None:
                outputs = decoder(outputs, dtype=outputs.type())
            infer_end = time_synchronized()
            outputs = backend.postprocess(outputs, num_classes, confthre, nmsthre)
            nms_end = time_synchronized()
            if timed:
                stats.forward_s += infer_end - start
                stats.nms_s += nms_end - infer_end
                stats.timed_batches += 1
            outputs = [o.float().cpu() if o is not None else None for o in outputs]
            if on_batch is not None:
                results.append(on_batch(outputs, info_imgs, ids))

    if distributed and get_world_size() > 1:
        results = list(itertools.chain(*gather(results, dst=0)))
        stats = stats.reduce(device if dist.get_backend() == "nccl" else torch.device("cpu"))
    return results, stats


def _torch_backend(model, half):
    """TorchBackend of `model` in eval mode; in a half copy with half on CUDA (the caller's model stays float)."""
    device = model_device(model)
    use_half = bool(half) and device.type == "cuda"
    if half and not use_half:
        logger.warning(f"half precision needs CUDA; evaluating in float32 on {device}")
    model = model.eval()
    if use_half:
        model = copy.deepcopy(model).half()  # a half copy: the caller's (e.g. the trainer's EMA) model stays float
    return TorchBackend(model)
