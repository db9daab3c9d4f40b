"""Inference speed on the CPU (used by benchmarks/bench_infer.py): ms per image of the forward pass and of the
postprocessing, apart, for PyTorch eager, PyTorch fused (channels_last), ONNX Runtime and OpenVINO, at batch 1 and
8, beside the official release's PyTorch path, with a check that every backend finds the official detections
(OpenVINO also in bfloat16, where the CPU has it).

All sides run the published COCO architecture (80 classes) with the same weights: benchmarks.fitted_weights fits
them to the bundled forest val tiles (no published weights can be fetched here), so that at conf 0.001 the
postprocessing sees thousands of candidates per image, as with trained weights (NMS removes fewer of them than it
would of a trained model's clustered boxes: its timing is on the heavy side, for both sides alike). The inputs are
those tiles letterboxed (7 images; batch 8 repeats the first). The official release runs in a subprocess that
imports it from the folder given with --official (nothing of it is part of this project), as in the demo:
model(images) then postprocess(..., class_agnostic=True) image by image; our side calls yolox.utils.postprocess (the
whole batch at once) the same way.
"""
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torchvision
from loguru import logger

from benchmarks.fitted_weights import detector_like, forest_images
from yolox.apps.export import export_onnx, prepare_for_export
from yolox.deploy import OnnxRuntimeBackend, OpenVINOBackend, TorchBackend, export_openvino
from yolox.utils import fuse_model
from benchmarks.official_release import check_official_package, official_release_env

__all__ = ["InferBenchConfig", "run_infer_benchmark", "format_infer_table", "compare_detections", "DEFAULT_MODELS",
           "IMPLS", "FLOAT_BACKENDS", "float_backend", "plain_onnx"]

DEFAULT_MODELS = (("yolox-nano", 416), ("yolox-s", 640))
# openvino runs in float32; openvino-bf16 lets it use bfloat16 where the CPU has it (its own default there):
# faster, with outputs that move by about 1e-2
IMPLS = ("torch", "torch-fused-cl", "onnxruntime", "openvino", "openvino-bf16")


@dataclass
class InferBenchConfig:
    models: Sequence[Tuple[str, int]] = DEFAULT_MODELS
    batches: Sequence[int] = (1, 8)
    impls: Sequence[str] = IMPLS
    repeats: int = 10  # timed calls per batch size and implementation
    warmup: int = 2
    conf: float = 0.001
    nms: float = 0.65  # the COCO Exps' nmsthre
    official: Optional[str] = None  # source folder of the official release[:folder of its dependencies]
    threads: int = 0  # 0: each runtime's default
    seed: int = 0


def _build_model(exp_name, size, seed):
    """(model with fitted weights, (8, 3, size, size) images) for the published architecture exp_name."""
    from yolox.exp import get_exp

    exp = get_exp(None, exp_name)
    images, boxes, _ = forest_images(size)
    torch.manual_seed(seed)
    # negatives at logit -6: about 2300 of yolox-s's 8400 anchors (1600 of nano's 3549 at 416) pass conf 0.001;
    # min_var 0.1: runtimes' outputs differ by rounding only, as with trained weights
    model = detector_like(exp.get_model(), images, boxes, class_logit_std=1.5, seed=seed, min_var=0.1,
                          negative_logit=-6.0)
    batch = torch.cat([images, images[:1]])[:8] if images.shape[0] < 8 else images[:8]
    return model, batch


FLOAT_BACKENDS = ("torch", "torch-fused", "torch-fused-cl", "onnxruntime", "openvino", "openvino-bf16")


def plain_onnx(model, onnx_file, size):
    """onnx_file, exported from model first when missing: raw outputs and a free batch, as the official export
    makes. size: (H, W)."""
    if not os.path.isfile(onnx_file):
        export_onnx(prepare_for_export(copy.deepcopy(model), False), onnx_file, (1, 3, *size), dynamic=True)
    return onnx_file


def float_backend(kind, model, onnx_file, size, threads):
    """The InferenceBackend of one of FLOAT_BACKENDS for model: PyTorch as it is, fused (eval --fuse), fused in
    channels_last; ONNX Runtime on onnx_file; OpenVINO (float32 or bfloat16) on its IR beside it (each file made
    when missing). A runtime that is not installed raises its one-line ValueError."""
    if kind == "torch":
        return TorchBackend(model)
    if kind in ("torch-fused", "torch-fused-cl"):
        return TorchBackend(fuse_model(copy.deepcopy(model)), channels_last=kind.endswith("cl"))
    plain_onnx(model, onnx_file, size)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(onnx_file, threads=threads)
    if kind not in ("openvino", "openvino-bf16"):
        raise ValueError(f"{kind!r}: choose from {', '.join(FLOAT_BACKENDS)}")
    xml = os.path.splitext(onnx_file)[0] + ".xml"
    if not os.path.isfile(xml):
        export_openvino(onnx_file, xml)
    return OpenVINOBackend(xml, threads=threads, precision="bf16" if kind.endswith("bf16") else "f32")


def _backends(model, size, impls, folder, threads):
    """{impl: InferenceBackend}; a runtime that is not installed is left out with a log line."""
    out = {}
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"--impls {impl!r}: choose from {', '.join(IMPLS)}")
        try:
            out[impl] = float_backend(impl, model, os.path.join(folder, f"model_{size}.onnx"), (size, size), threads)
        except ValueError as e:
            logger.warning(f"{impl} left out: {e}")
    return out


def time_backends(backends, images, num_classes, conf, nms, repeats, warmup):
    """{impl: (forward ms per call, postprocess ms per call, detections of the last call)} of each backend on
    images, each backend's calls back to back as a deployed process makes them. (Taking turns call by call would
    time how one runtime's idle threads, still spinning after its call, slow the next runtime down.)"""
    times = {}
    with torch.no_grad():
        for impl, backend in backends.items():
            forward, post, dets = [], [], None
            for i in range(warmup + repeats):
                start = time.perf_counter()
                outputs = backend(images)
                mid = time.perf_counter()
                # (an export with NMS in its graph returns its detections: its postprocess only unpacks them)
                dets = backend.postprocess(outputs, num_classes, conf, nms, class_agnostic=True)
                end = time.perf_counter()
                if i >= warmup:
                    forward.append(1000 * (mid - start))
                    post.append(1000 * (end - mid))
            times[impl] = (forward, post, dets)
    return times


# Run with the official release first on sys.path: its own get_exp, fuse_model and postprocess, as its demo calls
# them (Predictor.inference: model(img), then postprocess(outputs, num_classes, conf, nms, class_agnostic=True)).
_OFFICIAL_SCRIPT = r"""
import copy, json, sys, time
import torch
exp_name, weights, images_file, out_file, batches, repeats, warmup, conf, nms, threads, num_classes = sys.argv[1:12]
batches = [int(b) for b in batches.split(",")]
repeats, warmup, threads, conf, nms = int(repeats), int(warmup), int(threads), float(conf), float(nms)
if threads > 0:
    torch.set_num_threads(threads)
import yolox
from yolox.exp import get_exp
from yolox.utils import fuse_model, postprocess
images = torch.load(images_file)
exp = get_exp(None, exp_name)
if int(num_classes) > 0:
    exp.num_classes = int(num_classes)
model = exp.get_model()
model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
model.eval()
models = {"official": model, "official-fused": fuse_model(copy.deepcopy(model))}
result = {"package": yolox.__file__, "rows": [], "detections": {}}
with torch.no_grad():
    for impl, m in models.items():
        for b in batches:
            x = images[:b]
            forward, post = [], []
            for i in range(warmup + repeats):
                start = time.perf_counter()
                outputs = m(x)
                mid = time.perf_counter()
                dets = postprocess(outputs, exp.num_classes, conf, nms, class_agnostic=True)
                end = time.perf_counter()
                if i >= warmup:
                    forward.append(1000 * (mid - start))
                    post.append(1000 * (end - mid))
            result["rows"].append({"impl": impl, "batch": b, "forward_ms": forward, "post_ms": post})
            if impl == "official":
                result["detections"][str(b)] = [None if d is None else d.tolist() for d in dets]
with open(out_file, "w") as f:
    json.dump(result, f)
"""


def time_official(official, exp_name, model, images, batches, config, num_classes=0):
    """(rows like ours for "official" and "official-fused", {batch: detections}) from the official release.

    num_classes > 0: the official factory's model with that many classes (a model trained on one's own data).

    official: its source folder, optionally followed (os.pathsep-separated) by folders of its dependencies (thop).
    """
    official_dir, env = official_release_env(official)
    with tempfile.TemporaryDirectory() as tmp:
        weights, images_file, out_file = (os.path.join(tmp, n) for n in ("w.pth", "x.pt", "out.json"))
        torch.save(model.state_dict(), weights)
        torch.save(images, images_file)
        argv = [exp_name, weights, images_file, out_file, ",".join(map(str, batches)), str(config.repeats),
                str(config.warmup), str(config.conf), str(config.nms), str(config.threads), str(num_classes)]
        proc = subprocess.run([sys.executable, "-c", _OFFICIAL_SCRIPT, *argv], cwd=tmp, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the official inference failed in {official_dir}:\n{proc.stderr[-3000:]}")
        with open(out_file) as f:
            result = json.load(f)
    check_official_package(result["package"], official_dir)
    dets = {int(b): [None if d is None else torch.tensor(d) for d in v] for b, v in result["detections"].items()}
    return result["rows"], dets


def compare_detections(ours, reference, conf, tol=2e-3):
    """(same: bool, worst IoU of a matched detection, worst |score difference| of a match) over the images.

    A detection matches the reference box it overlaps most when their IoU is above 0.99. Same means: matched
    scores within tol, and every unmatched detection (on either side) scored within tol of conf, i.e. one that the
    runtimes' rounding (1e-5 on trained weights, up to 1e-3 on the fitted ones) puts on either side of the
    threshold, or that NMS kept instead of a near-equal neighbour."""
    worst_iou, worst_ds, same = 1.0, 0.0, True
    for a, b in zip(ours, reference):
        a = a if a is not None else torch.zeros(0, 7)
        b = b if b is not None else torch.zeros(0, 7)
        score_a, score_b = a[:, 4] * a[:, 5], b[:, 4] * b[:, 5]  # (na,), (nb,)
        iou = torchvision.ops.box_iou(a[:, :4].float(), b[:, :4].float())  # (na, nb)
        for iou_rows, s_rows, s_cols in ((iou, score_a, score_b), (iou.T, score_b, score_a)):
            if iou_rows.shape[0] == 0:
                continue
            if iou_rows.shape[1] == 0:
                same = same and bool((s_rows < conf + tol).all())
                continue
            best_iou, best = iou_rows.max(1)  # (n,) each
            matched = best_iou > 0.99
            same = same and bool((s_rows[~matched] < conf + tol).all())
            if matched.any():
                worst_iou = min(worst_iou, float(best_iou[matched].min()))
                worst_ds = max(worst_ds, float((s_rows[matched] - s_cols[best[matched]]).abs().max()))
    return same and worst_ds < tol, worst_iou, worst_ds


def _row(exp_name, size, batch, impl, forward, post, dets):
    n_img = max(batch, 1)
    fwd, pp = statistics.median(forward) / n_img, statistics.median(post) / n_img
    return {"model": exp_name, "size": size, "batch": batch, "impl": impl, "forward_ms": fwd, "post_ms": pp,
            "total_ms": fwd + pp, "forward_times_ms": forward, "post_times_ms": post,
            "detections": None if dets is None else sum(0 if d is None else d.shape[0] for d in dets) / n_img}


def run_infer_benchmark(config: InferBenchConfig, log=logger.info):
    """Rows {model, size, batch, impl, forward_ms, post_ms, total_ms (per image), detections per image,
    candidates per image, same_as_official, worst_iou, vs_official (official total / this total)}."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for exp_name, size in config.models:
            model, images = _build_model(exp_name, size, config.seed)
            num_classes = model.head.num_classes
            backends = _backends(model, size, config.impls, folder, config.threads)
            official_dets = {}
            if config.official:
                official_rows, official_dets = time_official(config.official, exp_name, model, images,
                                                             config.batches, config)
                for r in official_rows:
                    dets = official_dets.get(r["batch"])
                    rows.append(_row(exp_name, size, r["batch"], r["impl"], r["forward_ms"], r["post_ms"],
                                     dets if r["impl"] == "official" else None))
                    log(f"{exp_name} {size} batch {r['batch']} {r['impl']}: {rows[-1]['total_ms']:.1f} ms/img")
            for batch in config.batches:
                x = images[:batch].numpy()
                with torch.no_grad():
                    outputs = TorchBackend(model)(x)
                candidates = float((outputs[..., 4] * outputs[..., 5:].amax(-1) >= config.conf).sum()) / batch
                timed = time_backends(backends, x, num_classes, config.conf, config.nms, config.repeats,
                                      config.warmup)
                for impl, (forward, post, dets) in timed.items():
                    row = _row(exp_name, size, batch, impl, forward, post, dets)
                    row["candidates"] = candidates
                    if batch in official_dets:
                        row["same_as_official"], row["worst_iou"], row["worst_score_diff"] = compare_detections(
                            dets, official_dets[batch], config.conf)
                    rows.append(row)
                    log(f"{exp_name} {size} batch {batch} {impl}: {row['total_ms']:.1f} ms/img")
    for r in rows:
        base = next((o for o in rows if o["impl"] == "official" and o["model"] == r["model"]
                     and o["batch"] == r["batch"]), None)
        r["vs_official"] = base["total_ms"] / r["total_ms"] if base else None
    return rows


def format_infer_table(rows):
    from tabulate import tabulate

    def same(r):
        if "same_as_official" not in r:
            return "-"
        return ("yes" if r["same_as_official"] else "NO") + f" (IoU>={r['worst_iou']:.4f})"

    table = [(r["model"], f"{r['size']}x{r['size']}", r["batch"], r["impl"], f"{r['forward_ms']:.1f}",
              f"{r['post_ms']:.1f}", f"{r['total_ms']:.1f}",
              f"{min(r['forward_times_ms']) / r['batch']:.1f}-{max(r['forward_times_ms']) / r['batch']:.1f}",
              "-" if r.get("candidates") is None else f"{r['candidates']:.0f}",
              "-" if r["detections"] is None else f"{r['detections']:.0f}", same(r),
              f"{r['vs_official']:.2f}x" if r["vs_official"] else "-") for r in rows]
    return tabulate(table, headers=["model", "input", "batch", "impl", "forward ms/img", "post ms/img", "total ms/img",
                                    "forward range", "candidates/img", "dets/img", "same dets as official",
                                    "vs official"], tablefmt="github")

