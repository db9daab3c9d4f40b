"""Samples/s of the official release's own Mosaic/MixUp pipeline, imported from its source folder in a subprocess.

benchmarks/bench_data.py --official puts it beside the fast pipeline and the direct implementation. The subprocess runs
the release as it runs for its users: its COCODataset (cached or decoding the files), MosaicDetection and
TrainTransform with the yolox_s settings, glibc's malloc defaults and one OpenCV thread. Nothing of the release is
copied here (see yolox.utils.official_release).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks.official_release import check_official_package, official_release_env

__all__ = ["official_samples_per_second"]

_SCRIPT = r"""
import contextlib, json, random, sys, time
import cv2
import numpy as np
cv2.setNumThreads(1)
import yolox
from yolox.data import COCODataset, MosaicDetection, TrainTransform

args = json.loads(sys.argv[1])
size = tuple(args["size"])
with contextlib.redirect_stdout(sys.stderr):
    dataset = COCODataset(args["data_dir"], args["ann"], args["name"], img_size=size, cache=args["cache"])

def identity(img, labels, input_dim):
    return img, labels

def rate(preproc, samples):
    mosaic = MosaicDetection(dataset, size, mosaic=True, preproc=preproc, degrees=10.0, translate=0.1,
                             mosaic_scale=(0.1, 2), mixup_scale=(0.5, 1.5), shear=2.0, enable_mixup=True,
                             mosaic_prob=1.0, mixup_prob=1.0)
    random.seed(0)
    np.random.seed(0)
    n = len(mosaic)
    mosaic[(True, 0)]
    start = time.perf_counter()
    for i in range(samples):
        mosaic[(True, i % n)]
    return samples / (time.perf_counter() - start)

out = {"package": yolox.__file__, "mosaic+mixup": rate(identity, args["samples"])}
if args["with_transform"]:
    out["mosaic+mixup+TrainTransform"] = rate(TrainTransform(max_labels=120, flip_prob=0.5, hsv_prob=1.0),
                                              args["samples"])
print(json.dumps(out))
"""


def official_samples_per_second(official, data_dir, ann, name, size, samples, cache, with_transform=True,
                                timeout=1800):
    """{stage: samples/s} of the official release in one process (a subprocess).

    official: the release's source folder (the one holding yolox/), optionally followed (os.pathsep-separated) by
    folders holding its extra dependencies (thop). The release writes its image cache into the data folder, so with
    cache=True the data is copied to a temporary folder first.
    """
    official_dir, env = official_release_env(official)
    with tempfile.TemporaryDirectory() as tmp:
        if cache:
            copy = os.path.join(tmp, "data")
            os.makedirs(os.path.join(copy, "annotations"))
            shutil.copy(os.path.join(data_dir, "annotations", ann), os.path.join(copy, "annotations", ann))
            shutil.copytree(os.path.join(data_dir, name), os.path.join(copy, name))
            data_dir = copy
        args = dict(data_dir=os.path.abspath(data_dir), ann=ann, name=name, size=list(size), samples=samples,
                    cache=bool(cache), with_transform=with_transform)
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(args)], capture_output=True, text=True,
                              env=env, cwd=tmp, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the official pipeline failed in {official_dir}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    check_official_package(result.pop("package"), official_dir)
    return result
