"""One table for deployment on the CPU: per backend and precision (PyTorch, ONNX Runtime float32 and INT8, OpenVINO
float32, bfloat16 where the CPU has it, and INT8), the AP50:95 and AP50 on an Exp's val set beside the latency per
image at batch 1 and batch 8, and the ratio to the official release's PyTorch path (--official).

The model: a checkpoint (-c; its Exp from -f or from the checkpoint itself), or, without one, an architecture
(--arch yolox-s) on the bundled forest Exp with weights fitted to its val tiles (benchmarks.fitted_weights: no
published weights can be fetched here). Every path runs the same weights: exported to ONNX once (free batch, raw
outputs decoded by the backend, as the official export), converted to OpenVINO, and quantised to INT8 on the Exp's
val images through the evaluation's own letterbox (yolox.deploy.quantize). AP: the project's COCOEvaluator with the
Exp's test_conf and nmsthre, the same for every path. Latency: forward plus postprocess (at the Exp's test_conf),
median of the timed calls, per image, on the val images letterboxed (batch 8 repeats the first ones when the val set
is smaller).
"""
import copy
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from loguru import logger

__all__ = ["DeployBenchConfig", "PATHS", "run_deploy_benchmark", "format_deploy_table", "bf16_available"]

# onnxruntime-nms: float32 with the decoding, the score threshold and NMS in the graph (export_onnx --nms)
PATHS = ("torch", "onnxruntime", "onnxruntime-nms", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8")
FOREST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "exps", "example", "forest")
FOREST_EXP = os.path.join(FOREST_DIR, "yolox_nano_forest.py")  # depthwise (nano's get_model)
FOREST_S_EXP = os.path.join(FOREST_DIR, "yolox_s_forest.py")  # the same data, the plain model of the other sizes
# depth, width, depthwise of the published architectures (the official factories' values)
ARCHS = {"yolox-nano": (0.33, 0.25, True), "yolox-tiny": (0.33, 0.375, False), "yolox-s": (0.33, 0.50, False),
         "yolox-m": (0.67, 0.75, False), "yolox-l": (1.0, 1.0, False), "yolox-x": (1.33, 1.25, False)}


@dataclass
class DeployBenchConfig:
    exp_file: Optional[str] = None  # default: the forest Exp
    ckpt: Optional[str] = None  # None: weights fitted to the forest val tiles
    arch: str = "yolox-nano"  # without a checkpoint: the architecture to fit (on the forest Exp)
    size: Optional[int] = None  # square test size; default the Exp's test_size
    batches: Sequence[int] = (1, 8)
    paths: Sequence[str] = PATHS
    repeats: int = 10
    warmup: int = 2
    calib: int = 300
    official: Optional[str] = None
    threads: int = 0
    opts: Sequence[str] = field(default_factory=tuple)


def bf16_available():
    """Whether OpenVINO's CPU plugin computes in bfloat16 here (AVX-512 BF16 or AMX)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no OpenVINO: no bf16 path either
        return False


def _exp_and_model(config):
    """(exp, model in eval mode on the CPU, arch name of the official factory, where the weights come from)."""
    from yolox.exp import get_exp, load_exp_weights

    if config.ckpt:
        from yolox.apps.weights_exp import exp_for_weights

        exp = exp_for_weights(config.exp_file, None, config.ckpt, backend="torch")
        exp.merge(list(config.opts))
        if config.size:
            exp.test_size = (config.size, config.size)
        model = exp.get_model()
        load_exp_weights(model, config.ckpt, num_classes=exp.num_classes)
        arch = _official_arch(exp, model)
        return exp, model.eval(), arch, config.ckpt
    from benchmarks.fitted_weights import detector_like, forest_images

    if config.arch not in ARCHS:
        raise ValueError(f"--arch {config.arch!r}: choose from {', '.join(ARCHS)}")
    depth, width, depthwise = ARCHS[config.arch]
    exp = get_exp(config.exp_file or (FOREST_EXP if depthwise else FOREST_S_EXP), None)
    exp.depth, exp.width = depth, width
    exp.merge(list(config.opts))
    if not depthwise and hasattr(exp, "depthwise"):
        exp.depthwise = False
    size = config.size or exp.test_size[0]
    exp.test_size = (size, size)
    exp.model = None
    images, boxes, _ = forest_images(size)
    torch.manual_seed(0)
    model = detector_like(exp.get_model(), images, boxes, class_logit_std=1.5, seed=0, min_var=0.1,
                          negative_logit=-6.0)
    return exp, model.eval(), config.arch, f"{config.arch} fitted to the forest val tiles"


def _official_arch(exp, model):
    """The official factory name whose depth / width / depthwise match the Exp's model (None when none does)."""
    depthwise = any(type(m).__name__ == "DWConv" for m in model.modules())  # nano's Exp hard-codes it
    for name, (depth, width, dw) in ARCHS.items():
        if abs(exp.depth - depth) < 1e-6 and abs(exp.width - width) < 1e-6 and depthwise == dw:
            return name
    return None


def _val_images(exp, batches):
    """(max batch, 3, H, W) val images letterboxed as evaluation does (repeated when the val set is smaller)."""
    from yolox.deploy.quantize import calibration_images

    calib = calibration_images(copy.copy(exp), n=max(batches))
    images = torch.cat([torch.from_numpy(img) for img in calib])  # (n, 3, H, W)
    while images.shape[0] < max(batches):
        images = torch.cat([images, images])
    return images[:max(batches)]


def _build_paths(config, exp, model, folder):
    """{path: backend or model} for the asked paths; a runtime that is missing is left out with a log line."""
    from benchmarks.infer import float_backend, plain_onnx
    from yolox.apps.export import export_onnx, prepare_for_export
    from yolox.deploy import NMSSettings, OnnxRuntimeBackend, OpenVINOBackend, export_openvino
    from yolox.deploy.quantize import calibration_images, quantize_onnx_static, quantize_openvino

    size = exp.test_size
    onnx_file, xml_file = os.path.join(folder, "model.onnx"), os.path.join(folder, "model.xml")
    out, calib = {}, None
    for path in config.paths:
        if path not in PATHS:
            raise ValueError(f"--paths {path!r}: choose from {', '.join(PATHS)}")
        if path == "openvino-bf16" and not bf16_available():
            logger.warning("openvino-bf16 left out: this CPU computes no bfloat16 (no AVX-512 BF16 / AMX)")
            continue
        try:
            if path in ("torch", "onnxruntime", "openvino", "openvino-bf16"):  # PyTorch as eval --fuse runs it
                out[path] = float_backend("torch-fused" if path == "torch" else path, model, onnx_file, size,
                                          config.threads)
                continue
            if path.endswith("int8") and calib is None:
                calib = calibration_images(copy.copy(exp), n=config.calib)
            if path == "onnxruntime-nms":
                nms_file = os.path.join(folder, "model_nms.onnx")
                export_onnx(prepare_for_export(copy.deepcopy(model), True), nms_file, (1, 3, *size), dynamic=True,
                            nms=NMSSettings(conf=exp.test_conf, nmsthre=exp.nmsthre))
                out[path] = OnnxRuntimeBackend(nms_file, threads=config.threads)
            elif path == "onnxruntime-int8":
                q = quantize_onnx_static(plain_onnx(model, onnx_file, size), calib,
                                         os.path.join(folder, "model_int8.onnx"))
                out[path] = OnnxRuntimeBackend(q, threads=config.threads)
            else:  # openvino-int8
                if not os.path.isfile(xml_file):
                    export_openvino(plain_onnx(model, onnx_file, size), xml_file)
                q = quantize_openvino(xml_file, calib, os.path.join(folder, "model_int8.xml"))
                out[path] = OpenVINOBackend(q, threads=config.threads)
        except ValueError as e:
            logger.warning(f"{path} left out: {e}")
    return out


def _ap(exp, runner):
    evaluator = exp.get_evaluator(batch_size=8, is_distributed=False)
    ap50_95, ap50, _ = evaluator.evaluate(runner, False, False, None, None, exp.test_size)
    return float(ap50_95), float(ap50)


def run_deploy_benchmark(config: DeployBenchConfig, log=logger.info):
    """{"model", "weights", "size", "rows": [{path, precision, ap50_95, ap50, ms_b<batch>, vs_official_b<batch>}]}."""
    from benchmarks.infer import InferBenchConfig, time_backends, time_official

    if config.threads > 0:
        torch.set_num_threads(config.threads)
    exp, model, arch, weights = _exp_and_model(config)
    if config.official and arch is None:  # before minutes of exports and timing
        raise ValueError("--official needs a model of a published architecture (nano ... x); this Exp's "
                         f"depth {exp.depth} / width {exp.width} is none of them")
    images = _val_images(exp, config.batches)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        runners = _build_paths(config, exp, model, folder)
        for path, runner in runners.items():
            ap50_95, ap50 = _ap(exp, runner)
            row = {"path": path, "precision": _precision(path), "ap50_95": ap50_95, "ap50": ap50}
            log(f"{path}: AP50:95 {ap50_95:.4f}, AP50 {ap50:.4f}")
            rows.append(row)
        for batch in config.batches:
            x = images[:batch].numpy()
            timed = time_backends(runners, x, exp.num_classes, exp.test_conf, exp.nmsthre, config.repeats,
                                  config.warmup)
            for row in rows:
                forward, post, _ = timed[row["path"]]
                row[f"ms_b{batch}"] = (statistics.median(forward) + statistics.median(post)) / batch
                log(f"{row['path']} batch {batch}: {row[f'ms_b{batch}']:.1f} ms/img")
        if config.official:
            bench = InferBenchConfig(repeats=config.repeats, warmup=config.warmup, conf=exp.test_conf,
                                     nms=exp.nmsthre, threads=config.threads)
            official_rows, _ = time_official(config.official, arch, model, images, config.batches, bench,
                                             num_classes=exp.num_classes)
            official = {"path": "official 0.3.0 (PyTorch)", "precision": "float32", "ap50_95": None, "ap50": None}
            for r in official_rows:
                if r["impl"] == "official":
                    b = r["batch"]
                    official[f"ms_b{b}"] = (statistics.median(r["forward_ms"]) + statistics.median(r["post_ms"])) / b
            rows.insert(0, official)
            for row in rows:
                for b in config.batches:
                    row[f"vs_official_b{b}"] = official[f"ms_b{b}"] / row[f"ms_b{b}"]
    reference = next((r for r in rows if r["path"] == "onnxruntime"), None) or next(
        (r for r in rows if r["path"] == "torch"), None)
    for row in rows:
        row["d_ap50_95"] = None if reference is None or row["ap50_95"] is None else row["ap50_95"] - reference["ap50_95"]
        row["d_ap50"] = None if reference is None or row["ap50"] is None else row["ap50"] - reference["ap50"]
    return {"model": arch or "custom", "weights": weights, "size": list(exp.test_size), "batches": list(config.batches),
            "exp": type(exp).__module__, "rows": rows}


def _precision(path):
    return "int8" if "int8" in path else "bfloat16" if "bf16" in path else "float32"


def format_deploy_table(result):
    from tabulate import tabulate

    batches = result["batches"]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    table = []
    for r in result["rows"]:
        line = [r["path"], r["precision"], num(r["ap50_95"], ".4f"), num(r["ap50"], ".4f"),
                num(r.get("d_ap50_95"), "+.4f"), num(r.get("d_ap50"), "+.4f")]
        line += [num(r.get(f"ms_b{b}"), ".1f") for b in batches]
        line += [num(r.get(f"vs_official_b{b}"), ".2f") + ("x" if r.get(f"vs_official_b{b}") else "")
                 for b in batches if any(f"vs_official_b{b}" in x for x in result["rows"])]
        table.append(line)
    headers = ["path", "precision", "AP50:95", "AP50", "dAP50:95", "dAP50"]
    headers += [f"ms/img b{b}" for b in batches]
    headers += [f"vs official b{b}" for b in batches if any(f"vs_official_b{b}" in x for x in result["rows"])]
    title = (f"{result['model']} at {result['size'][0]}x{result['size'][1]} ({result['weights']}); dAP: against "
             "ONNX Runtime float32")
    return title + "\n" + tabulate(table, headers=headers, tablefmt="github")
