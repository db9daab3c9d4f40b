"""Samplers, the YOLOX DataLoader, seeded workers, the prefetcher, and memory staying flat with workers."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset as TorchDataset

from test_data_helpers import FOREST, make_coco
from yolox.utils.heap import TRIM_THRESHOLD
from yolox.data import (
    COCODataset,
    DataLoader,
    DataPrefetcher,
    InfiniteSampler,
    MosaicDetection,
    TrainTransform,
    YoloBatchSampler,
    channels_last_collate,
    worker_init_reset_seed,
)

REPO = Path(__file__).resolve().parents[1]


def test_infinite_sampler_seeded_and_rank_disjoint():
    def first(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    a = first(InfiniteSampler(10, seed=5), 30)
    assert a == first(InfiniteSampler(10, seed=5), 30)
    assert a != first(InfiniteSampler(10, seed=6), 30)
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))  # one permutation per pass
    assert all(isinstance(i, int) for i in a)
    r0 = first(InfiniteSampler(10, seed=5, rank=0, world_size=2), 5)
    r1 = first(InfiniteSampler(10, seed=5, rank=1, world_size=2), 5)
    assert sorted(r0 + r1) == list(range(10)) and r0 == a[0:10:2]
    assert len(InfiniteSampler(10, rank=1, world_size=2)) == 5
    assert first(InfiniteSampler(4, shuffle=False), 6) == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError, match="non-empty"):
        InfiniteSampler(0)


def test_batch_sampler_tags_each_batch_and_switches():
    bs = YoloBatchSampler(sampler=range(6), batch_size=2, drop_last=False, mosaic=True)
    it = iter(bs)
    assert next(it) == [(True, 0), (True, 1)]
    bs.mosaic = False
    assert next(it) == [(False, 2), (False, 3)]


class _RandomDraws(TorchDataset):
    """Returns the augmentation random numbers each sample would see."""

    def __len__(self):
        return 1000

    def __getitem__(self, index):
        mosaic, index = index[:2] if isinstance(index, (tuple, list)) else (True, index)
        return torch.tensor([float(index), random.random(), float(np.random.rand()), float(mosaic)])


def _batches(num_workers, seed, n=4):
    torch.manual_seed(seed)
    sampler = InfiniteSampler(1000, seed=0)
    loader = DataLoader(_RandomDraws(), batch_sampler=YoloBatchSampler(sampler, 2, False, mosaic=True),
                        num_workers=num_workers, worker_init_fn=worker_init_reset_seed)
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_workers_seeded_differently_and_reproducibly():
    a = _batches(2, seed=1)
    b = _batches(2, seed=1)
    c = _batches(2, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # batches 0 and 1 come from different workers: their random streams differ
    assert a[0][0, 1] != a[1][0, 1] and a[0][0, 2] != a[1][0, 2]


def test_default_loader_uses_yolo_batch_sampler_and_close_mosaic():
    loader = DataLoader(_RandomDraws(), batch_size=3, shuffle=False)
    assert isinstance(loader.batch_sampler, YoloBatchSampler)
    first = next(iter(loader))
    assert first[:, 0].tolist() == [0, 1, 2] and (first[:, 3] == 1).all()
    loader.close_mosaic()
    assert (next(iter(loader))[:, 3] == 0).all()


def test_same_seed_reproduces_a_mosaic_batch_whatever_the_workers():
    ds = COCODataset(str(FOREST), "train.json", "train", img_size=(128, 128))
    mosaic = MosaicDetection(ds, (128, 128), preproc=TrainTransform(max_labels=120), mosaic_scale=(0.5, 1.5),
                             enable_mixup=True)

    def batches(seed, num_workers, torch_seed=0, start=0):
        torch.manual_seed(torch_seed)
        sampler = InfiniteSampler(len(ds), seed=seed)
        sampler.set_start(start)
        loader = DataLoader(mosaic, batch_sampler=YoloBatchSampler(sampler, 4, False),
                            num_workers=num_workers, worker_init_fn=worker_init_reset_seed)
        it = iter(loader)
        return [next(it) for _ in range(3)]

    state = random.getstate()
    (a1, a2, a3), (b1, b2, b3), (c1, _, _) = batches(7, 2), batches(7, 0, torch_seed=5), batches(8, 2)
    assert random.getstate() == state  # samples made in the main process leave its random state alone
    # the augmentation is a function of the sampler's seed and the sample's place, not of the worker or torch seed
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in ((a1, b1), (a2, b2), (a3, b3)))
    assert not torch.equal(a1[0], c1[0])
    assert a1[0].shape == (4, 3, 128, 128) and a1[1].shape == (4, 120, 5)
    # starting after 4 samples reproduces the second batch, as a resumed run does
    (d2, d3, _) = batches(7, 2, start=4)
    assert torch.equal(d2[0], a2[0]) and torch.equal(d3[1], a3[1])


class _HWCViews(TorchDataset):
    """(C, H, W) uint8 views of (H, W, C) arrays, as TrainTransform(image_dtype=np.uint8) gives them."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        i = i[1] if isinstance(i, tuple) else i  # YoloBatchSampler gives (mosaic, index)
        hwc = np.random.default_rng(i).integers(0, 256, (5, 7, 3), dtype=np.uint8)
        return hwc.transpose(2, 0, 1), np.full((2, 5), i, np.float32), (5, 7), i


@pytest.mark.parametrize("num_workers", [0, 1])
def test_channels_last_collate_stacks_hwc_views_without_transposing(num_workers):
    ds = _HWCViews()
    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=num_workers, collate_fn=channels_last_collate)
    imgs, labels, info, ids = next(iter(loader))
    assert imgs.shape == (3, 3, 5, 7) and imgs.dtype == torch.uint8
    assert imgs.is_contiguous(memory_format=torch.channels_last) and not imgs.is_contiguous()
    assert torch.equal(imgs, torch.from_numpy(np.stack([ds[i][0] for i in range(3)])))  # the same (C, H, W) values
    assert labels.shape == (3, 2, 5) and ids.tolist() == [0, 1, 2] and [t.tolist() for t in info] == [[5] * 3, [7] * 3]
    # cast as the trainer does: still channels_last, the memory format of the model
    assert imgs.float().is_contiguous(memory_format=torch.channels_last)
    # contiguous (C, H, W) arrays (the official float32 images) and anything else: default_collate
    planar = [np.ascontiguousarray(ds[i][0], dtype=np.float32) for i in range(2)]
    out = channels_last_collate([(a, 1) for a in planar])
    assert out[0].is_contiguous() and torch.equal(out[0], torch.from_numpy(np.stack(planar)))
    assert channels_last_collate([np.zeros((1, 4, 4), np.uint8).transpose(0, 1, 2)] * 2).is_contiguous()


def test_prefetcher_on_cpu_passes_batches_through():
    loader = DataLoader(_RandomDraws(), batch_size=2, shuffle=False)
    plain = []
    for i, b in enumerate(loader):
        plain.append(b)
        if i == 2:
            break

    class Quad:
        def __iter__(self):
            for b in plain:
                yield b, b + 1, None, None

    pf = DataPrefetcher(Quad(), device="cpu")
    got = [pf.next() for _ in range(4)]
    assert all(torch.equal(g[0], p) and torch.equal(g[1], p + 1) for g, p in zip(got, plain))
    assert got[3] == (None, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetcher_copies_to_cuda():
    batches = [(torch.ones(2, 3), torch.zeros(2, 5), None, None) for _ in range(2)]
    pf = DataPrefetcher(batches, device="cuda")
    x, t = pf.next()
    assert x.is_cuda and t.is_cuda and x.sum().item() == 6


def _repeat_entries(root, copies):
    """Rewrite the COCO json of make_coco(root, ...) so that each image (and its boxes) appears `copies` times."""
    ann = root / "annotations" / "instances_train2017.json"
    coco = json.loads(ann.read_text())
    images, annotations = [], []
    for _ in range(copies):
        for im in coco["images"]:
            new_id = len(images) + 1
            images.append(dict(im, id=new_id))
            annotations += [dict(a, id=len(annotations) + 1, image_id=new_id) for a in coco["annotations"]
                            if a["image_id"] == im["id"]]
    ann.write_text(json.dumps(dict(coco, images=images, annotations=annotations)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_memory_stays_flat(tmp_path):
    """20 000 image entries (four real files): workers touching random entries must not copy the labels' pages."""
    make_coco(tmp_path, [(48, 64), (64, 48), (40, 40), (64, 64)], boxes_per_image=3)
    _repeat_entries(tmp_path, 5000)
    # Measured in a fresh process, as training runs: a fork of this pytest process would inherit its fragmented
    # heap, and workers reusing freed chunks of inherited pages copy them, which is noise and not what is tested.
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"  # the repository root: the benchmarks
        "from yolox.data import COCODataset, MosaicDetection, TrainTransform\n"
        "from benchmarks.data_pipeline import memory_over_samples\n"
        "ds = COCODataset(sys.argv[1], img_size=(64, 64))\n"
        "assert len(ds) == 20000, len(ds)\n"
        "mosaic = MosaicDetection(ds, (64, 64), preproc=TrainTransform(max_labels=50), enable_mixup=True)\n"
        "print(json.dumps(memory_over_samples(mosaic, num_workers=2, num_samples=1600, batch_size=16, every=400)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(REPO)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    private = [r[3] for r in rows]
    main_rss = [r[1] for r in rows]
    # the labels and ids of 20 000 images are a few MiB: copying them into the workers would show here
    assert private[-1] - private[0] < 6, rows
    assert main_rss[-1] - main_rss[0] < 6, rows


def test_bench_data_reports_the_decode_floor(capsys):
    """benchmarks/bench_data.py --no-cache: samples/s of both implementations and their share of the decode floor."""
    from benchmarks import bench_data

    result = bench_data.main(["--no-cache", "--size", "128", "--samples", "6", "--workers", "", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["decode_floor_samples_per_s"] == result["decode_floor_samples_per_s"] > 0
    assert 0 < printed["decode_ms_per_image"] < 1000
    rows = {r["impl"]: r for r in printed["throughput"]}
    assert set(rows) == {"direct", "fast"}
    for r in rows.values():
        assert r["of_decode_floor"] == r["one_process"] / printed["decode_floor_samples_per_s"]
        # one round (the default), against the decodes timed before and after it: the same ratio
        assert r["of_decode_floor_by_round"] == [pytest.approx(r["of_decode_floor"])]
    # the fast path reads only the tiles that show (and the MixUp image): between 1 and 5 reads per sample, and its
    # own floor is that of those reads
    assert 1 <= printed["fast_reads_per_sample"] <= 5
    assert 0 <= printed["fast_reduced_reads_per_sample"] <= printed["fast_reads_per_sample"]
    assert rows["fast"]["of_own_decodes_floor"] == (rows["fast"]["one_process"]
                                                    / printed["fast_own_decodes_floor_samples_per_s"])
    assert rows["direct"]["of_own_decodes_floor"] == rows["direct"]["of_decode_floor"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ram_cache_is_one_copy_shared_by_the_workers(tmp_path):
    """A 40 MiB RAM cache read by two workers: their private memory stays far below one copy of it."""
    make_coco(tmp_path, [(256, 256)] * 4, boxes_per_image=3)
    _repeat_entries(tmp_path, 64)  # 256 images of 256x256x3 = 48 MiB cached
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"  # the repository root: the benchmarks
        "from yolox.data import COCODataset, MosaicDetection, TrainTransform\n"
        "from benchmarks.data_pipeline import memory_over_samples\n"
        "ds = COCODataset(sys.argv[1], img_size=(256, 256), cache=True)\n"
        "print(json.dumps([ds._image_cache.nbytes / 2**20] + memory_over_samples(\n"
        "    MosaicDetection(ds, (256, 256), preproc=TrainTransform(max_labels=50)), num_workers=2,\n"
        "    num_samples=512, batch_size=16, every=128)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(REPO)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    cache_mib, *rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert cache_mib > 40
    # every cached image was read (4 tiles + MixUp per sample, 512 samples), yet the two workers own less than
    # half a copy beyond their own heaps (~18 MiB here, plus at most TRIM_THRESHOLD each of free heap that
    # yolox.utils.heap keeps for the next batch; a copy each would be 2 x 48 MiB), and it does not grow
    own_heaps = 18 + 2 * TRIM_THRESHOLD / 2**20
    assert rows[-1][3] < own_heaps + 0.5 * cache_mib, (cache_mib, rows)
    assert rows[-1][3] - rows[0][3] < 4, rows


_FAULTS_SCRIPT = """
import importlib.util, resource, sys
import numpy as np
spec = importlib.util.spec_from_file_location("heap", sys.argv[1])  # the module alone, without importing torch
heap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heap)
keep_image_buffers_in_heap = heap.keep_image_buffers_in_heap
applied = keep_image_buffers_in_heap()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # 10 batches of 8 samples, as a DataLoader worker builds them at 640
    batch = []
    for _ in range(8):  # a sample: 5 decoded tiles, 3 uint8 images at 640, and the float image it returns
        tmp = [np.ones((400, 400, 3), np.uint8) for _ in range(5)] + [np.ones((640, 640, 3), np.uint8) for _ in range(3)]
        batch.append(np.ones((3, 640, 640), np.float32))
        del tmp
    del batch
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_image_buffers_are_reused_from_the_heap_not_faulted_in_again():
    """keep_image_buffers_in_heap: batches of image-sized arrays reuse the first batch's pages instead of being
    mapped and faulted in again; YOLOX_MALLOC_TUNING=0 keeps glibc's defaults."""
    import os

    from yolox.utils import heap

    def faults(tuning):
        env = dict(os.environ, YOLOX_MALLOC_TUNING=tuning)
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, heap.__file__], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        applied, count = out.stdout.split()
        return applied == "True", int(count)

    (on, tuned), (off, default) = faults("1"), faults("0")
    assert on and not off
    batch_pages = 8 * 640 * 640 * 3 * 4 // 4096  # the float images of one batch
    assert default > 4 * batch_pages, (default, batch_pages)  # glibc maps and faults them in again and again
    assert tuned < 2 * batch_pages, (tuned, batch_pages)  # the first batch's pages, then reused


def test_bench_data_official_needs_a_release_folder(tmp_path):
    """--official names the folder when it holds no release."""
    from benchmarks.official_data_pipeline import official_samples_per_second

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        official_samples_per_second(str(tmp_path), str(FOREST), "train.json", "train", (64, 64), 2, cache=False)


def test_official_release_env_puts_the_release_first(tmp_path):
    """The benchmarks' subprocesses import yolox from the release folder, then its dependency folders."""
    from benchmarks.official_release import check_official_package, official_release_env

    (tmp_path / "rel" / "yolox").mkdir(parents=True)
    (tmp_path / "rel" / "yolox" / "__init__.py").write_text("")
    folder, env = official_release_env(f"{tmp_path / 'rel'}:{tmp_path / 'deps'}")
    assert folder == str(tmp_path / "rel")
    assert env["PYTHONPATH"].split(":")[:2] == [str(tmp_path / "rel"), str(tmp_path / "deps")]
    check_official_package(str(tmp_path / "rel" / "yolox" / "__init__.py"), folder)
    with pytest.raises(RuntimeError, match="not the release"):
        check_official_package("/elsewhere/yolox/__init__.py", folder)
