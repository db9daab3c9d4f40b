"""A batch without any box: zero box and class losses that stay in the graph, so that DistributedDataParallel
(which the trainer uses without find_unused_parameters, as the official) works when one process's share of the batch
has no box: small datasets and sparse mosaics at a small per-process batch meet it within the first epochs."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from model_zoo import build
from train_helpers import free_port
from yolox.models.simota import SIMOTA_MODES

SIZE = 64


def _labels_with_boxes(batch):
    labels = torch.zeros(batch, 3, 5)
    labels[:, 0] = torch.tensor([1.0, 20.0, 24.0, 16.0, 12.0])
    labels[:, 1] = torch.tensor([0.0, 44.0, 40.0, 10.0, 18.0])
    return labels


@pytest.mark.parametrize("use_l1", [False, True])
@pytest.mark.parametrize("mode", SIMOTA_MODES)
def test_a_batch_without_boxes_gives_every_parameter_a_gradient(mode, use_l1):
    torch.manual_seed(0)
    model = build("yolox-nano", num_classes=2, simota_mode=mode).train()
    model.head.use_l1 = use_l1
    out = model(torch.randn(2, 3, SIZE, SIZE), torch.zeros(2, 3, 5))
    assert out["iou_loss"] == 0 and out["cls_loss"] == 0 and out["l1_loss"] == 0
    assert out["conf_loss"] > 0 and torch.equal(out["total_loss"], out["conf_loss"])
    out["total_loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []  # what DDP's reducer needs from each process
    assert model.head.cls_preds[0].weight.grad.abs().sum() == 0
    assert model.head.reg_preds[0].weight.grad.abs().sum() == 0
    assert model.head.obj_preds[0].weight.grad.abs().sum() > 0


def _ddp_worker(rank, port, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same initial weights on both ranks
        model = DDP(build("yolox-nano", num_classes=2).train())
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(rank)
        for _ in range(3):  # rank 1 never has a box
            labels = _labels_with_boxes(2) if rank == 0 else torch.zeros(2, 3, 5)
            loss = model(torch.randn(2, 3, SIZE, SIZE, generator=gen), labels)["total_loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save(model.module.head.cls_preds[0].weight.detach(), os.path.join(result_dir, f"rank{rank}.pt"))
        dist.barrier()  # leave together (see test_eval_distributed)
    finally:
        dist.destroy_process_group()


def test_ddp_step_when_one_process_has_no_box(tmp_path):
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(w0, w1)  # the gradients were averaged over both processes, the class head learned
    torch.manual_seed(0)
    assert not torch.equal(w0, build("yolox-nano", num_classes=2).head.cls_preds[0].weight.detach())
