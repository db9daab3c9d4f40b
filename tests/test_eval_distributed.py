"""COCOEvaluator under two CPU processes (gloo): predictions gathered to rank 0 give the single-process AP."""
import contextlib
import io
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "datasets", "forest")
SIZE = (224, 224)


class JitteredGtModel(torch.nn.Module):
    """Each image's gt boxes, jittered by a seed of (image id, box): the same output whichever rank runs it."""

    def __init__(self, coco):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.coco, self.ids = coco, []

    def forward(self, imgs):
        out = torch.zeros(len(self.ids), 64, 6)
        for b, img_id in enumerate(self.ids):
            info = self.coco.loadImgs(img_id)[0]
            r = min(SIZE[0] / info["height"], SIZE[1] / info["width"])
            for a, ann in enumerate(self.coco.loadAnns(self.coco.getAnnIds(imgIds=[img_id]))):
                rng = np.random.default_rng(img_id * 1000 + a)
                x, y, w, h = (v * r for v in ann["bbox"])
                dx, dy, dw, dh = rng.normal(0, 0.1, 4) * [w, h, w, h]
                out[b, a] = torch.tensor([x + w / 2 + dx, y + h / 2 + dy, w + dw, h + dh, rng.uniform(0.2, 1), 1.0])
        return out


class IdsLoader:
    def __init__(self, loader, model):
        self.loader, self.model = loader, model
        self.dataset, self.batch_size = loader.dataset, loader.batch_size

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.model.ids = [int(i) for i in batch[3].reshape(-1)]
            yield batch


def evaluate(distributed):
    from yolox.data import COCODataset, ValTransform
    from yolox.evaluators import COCOEvaluator

    with contextlib.redirect_stdout(io.StringIO()):
        dataset = COCODataset(DATA, "val.json", "val", SIZE, ValTransform())
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=False) if distributed else None
    model = JitteredGtModel(dataset.coco)
    loader = IdsLoader(torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler), model)
    return COCOEvaluator(loader, SIZE, 0.01, 0.65, 1).evaluate(model, distributed=distributed)


def _worker(rank, world_size, port, out_file):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        ap, ap50, summary = evaluate(distributed=True)
        if rank == 0:
            with open(out_file, "w") as f:
                f.write(f"{ap!r} {ap50!r}\n{summary}")
        else:
            assert summary is None  # only rank 0 scores
        dist.barrier()  # leave together: a rank that tears gloo down while the other still scores can abort
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_gather_to_rank0(tmp_path):
    single_ap, single_ap50, _ = evaluate(distributed=False)
    out_file = tmp_path / "rank0.txt"
    # 7 val images on 2 ranks: the sampler repeats one image, which the evaluator must count once
    mp.spawn(_worker, args=(2, _free_port(), str(out_file)), nprocs=2, join=True)
    ap, ap50 = (float(v) for v in out_file.read_text().splitlines()[0].split())
    assert 0 < single_ap < 1
    assert (ap, ap50) == pytest.approx((single_ap, single_ap50), abs=1e-12)
    assert "Average forward time" in out_file.read_text()
