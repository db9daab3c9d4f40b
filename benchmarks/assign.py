"""Benchmark of the SimOTA modes: seeded scenario batches, memory estimates, the runner, its table and targets.

benchmarks/bench_assign.py is the command line; tests/test_bench_assign.py runs a scaled-down configuration.
"""
import math
import os
import platform
import zlib
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from loguru import logger
from tabulate import tabulate
from tqdm import tqdm

from yolox.models.simota import SIMOTA_MODES, assign, in_centre_prior, pack_sub_batches
from yolox.utils.anchors import AnchorGrid, decode_boxes, levels_for_input
from benchmarks.profiler import measure_call

__all__ = [
    "SCENARIOS", "DEFAULT_BATCH_SIZES", "BenchConfig", "ScenarioBatch", "make_scenario", "estimate_assign_bytes",
    "run_benchmark", "format_table", "evaluate_targets", "format_targets",
]

SCENARIOS = ("coco", "sparse", "crowded", "one1000")
DEFAULT_BATCH_SIZES = (2, 4, 8, 16, 32, 64)
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)  # -4.6: the head's initial cls / obj bias (prior probability 0.01)

# Measured with this benchmark (CPU, fp32, 640): peak bytes of one call over the bytes of its largest (G, C, K) float
# class-cost tensor (1.03..1.18 for loop and packed), and packed's extra bytes per (sum G, n * A) centre-prior cell
# (float64 edge distances of every packed gt to every packed anchor; 12..40 measured).
GCK_PEAK_FACTOR = 1.1
PACKED_BYTES_PER_PRIOR_CELL = 20


@dataclass
class BenchConfig:
    image_size: int = 640
    num_classes: int = 80
    scenarios: Sequence[str] = SCENARIOS
    modes: Sequence[str] = SIMOTA_MODES
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    repeats: int = 3
    device: str = "cpu"
    max_gb: float = 8.0  # loop / packed cells whose estimated memory is above this are skipped
    single_run_above_s: float = 3.0  # a cell whose first call takes longer is timed by that one call
    threads: int = 0  # torch intra-op threads while benchmarking (0: leave torch's setting)
    gt_scale: float = 1.0  # multiplies every scenario's gt counts (tests shrink them with the image)
    pack_width: int = 10000
    seed: int = 0
    top_ops: int = 8  # slowest ops kept per cell

    def check(self):
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
        unknown = [m for m in self.modes if m not in SIMOTA_MODES]
        if unknown:
            raise ValueError(f"unknown SimOTA mode(s) {unknown}; choose from {SIMOTA_MODES}")
        bad = [b for b in self.batch_sizes if int(b) < 1]
        if bad:
            raise ValueError(f"batch sizes {bad} are not >= 1")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size={self.image_size}; use a multiple of 32 (the largest stride), e.g. 640")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads}; use 0 for torch's default or a positive count")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats}; need at least 1")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available here; use --device cpu")


# ----------------------------------------------------------------------------------------------------------
# Scenario batches
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ScenarioBatch:
    """One batch of assignment inputs, as YOLOXHead.get_assignments hands them to `assign`."""

    pred_boxes: torch.Tensor  # (B, A, 4) decoded cx, cy, w, h
    cls_logits: torch.Tensor  # (B, A, K)
    obj_logits: torch.Tensor  # (B, A)
    gt_boxes: torch.Tensor  # (B, M, 4) cx, cy, w, h; padding rows are 0
    gt_classes: torch.Tensor  # (B, M) int64
    gt_valid: torch.Tensor  # (B, M) bool
    grid: AnchorGrid
    gt_counts: List[int]  # real gts per image
    cand_counts: List[int]  # anchors inside some gt's centre prior, per image

    def args(self):
        return (self.pred_boxes, self.cls_logits, self.obj_logits, self.gt_boxes, self.gt_classes, self.gt_valid,
                self.grid)


def _gt_counts(scenario, batch_size, scale, gen) -> List[int]:
    def scaled(n):
        return max(1, int(round(n * scale)))

    sparse = torch.randint(1, 4, (batch_size,), generator=gen).tolist()  # 1..3
    if scenario == "sparse":
        return sparse  # a handful of gts whatever the scale
    if scenario == "crowded":
        return [scaled(300)] * batch_size
    if scenario == "one1000":
        return [scaled(1000)] + sparse[1:]
    # coco: lognormal with mean exp(mu + sigma^2 / 2) = 20 -- most mosaics hold 5..40 gts, a few far more
    sigma = 0.9
    mu = math.log(20.0) - sigma ** 2 / 2
    draws = torch.empty(batch_size).log_normal_(mu, sigma, generator=gen)
    return [scaled(min(120, max(1, int(round(d))))) for d in draws.tolist()]


def _gt_boxes(n, image_size, gen):
    """n COCO-like (cx, cy, w, h): sqrt(area) lognormal around 42 px at 640 (about 40% small < 32 px, 20% large
    > 96 px), aspect ratio lognormal, boxes inside the image. (n, 4) float32."""
    scale = image_size / 640.0
    side = torch.empty(n).log_normal_(math.log(42.0 * scale), 1.0, generator=gen).clamp(2.0, 0.9 * image_size)
    ratio = torch.empty(n).log_normal_(0.0, 0.5, generator=gen)  # w / h
    w = (side * ratio.sqrt()).clamp(2.0, float(image_size))
    h = (side / ratio.sqrt()).clamp(2.0, float(image_size))
    cx = w / 2 + torch.rand(n, generator=gen) * (image_size - w)
    cy = h / 2 + torch.rand(n, generator=gen) * (image_size - h)
    return torch.stack([cx, cy, w, h], -1)


def _gt_classes(n, num_classes, gen):
    """A third of the gts are class 0 ('person' dominates COCO), the rest uniform."""
    cls = torch.randint(0, num_classes, (n,), generator=gen)
    return torch.where(torch.rand(n, generator=gen) < 1 / 3, torch.zeros_like(cls), cls)


def _prior_mask(gts, grid: AnchorGrid, chunk=256):
    """(G, A) bool: anchor centre inside the gt's centre prior (chunks of gts bound the float temporaries)."""
    anchor_cx, anchor_cy = grid.centres()
    parts = [in_centre_prior(g[:, 0:1], g[:, 1:2], anchor_cx, anchor_cy, grid.strides) for g in gts.split(chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, grid.num_anchors, dtype=torch.bool)


def _early_training_raw(gts, prior, grid: AnchorGrid, gen, near_fraction=0.5):
    """Raw (A, 4) regression of a model early in training: random offsets and sizes of about one stride, except
    that about `near_fraction` of the anchors inside some gt's prior already point at a jittered copy of that gt,
    so IoUs (and dynamic k) spread over 0..0.9 as in the first epochs."""
    A = grid.num_anchors
    raw = torch.randn(A, 4, generator=gen) * torch.tensor([0.5, 0.5, 0.4, 0.4])  # ~ one cell, ~ one stride wide
    if gts.shape[0] == 0:
        return raw
    # each candidate anchor follows one random gt among those whose prior holds it
    pick = (prior.float() * (torch.rand(prior.shape, generator=gen) + 1e-3)).argmax(0)  # (A,)
    near = prior.any(0) & (torch.rand(A, generator=gen) < near_fraction)  # (A,)
    target = gts[pick]  # (A, 4)
    jitter = torch.randn(A, 4, generator=gen)
    cx = target[:, 0] + 0.15 * target[:, 2] * jitter[:, 0]
    cy = target[:, 1] + 0.15 * target[:, 3] * jitter[:, 1]
    w = target[:, 2] * torch.exp(0.3 * jitter[:, 2])
    h = target[:, 3] * torch.exp(0.3 * jitter[:, 3])
    s = grid.strides
    # invert decode_boxes: cx = (raw_x + x) * s, w = exp(raw_w) * s
    aimed = torch.stack([cx / s - grid.x_shifts, cy / s - grid.y_shifts, torch.log(w / s), torch.log(h / s)], -1)
    return torch.where(near.unsqueeze(-1), aimed, raw)


def make_scenario(scenario, batch_size, image_size=640, num_classes=80, gt_scale=1.0, seed=0,
                  device="cpu") -> ScenarioBatch:
    """A reproducible batch of `scenario` (see SCENARIOS); the same arguments give bit-equal tensors."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
    # crc32, not hash(): str hashes change from one process to the next
    gen = torch.Generator().manual_seed(zlib.crc32(f"{scenario}/{batch_size}/{image_size}/{seed}".encode()))
    grid = AnchorGrid.from_shapes(levels_for_input(image_size, image_size))
    A = grid.num_anchors
    counts = _gt_counts(scenario, batch_size, gt_scale, gen)
    M = max(counts)
    gt_boxes = torch.zeros(batch_size, M, 4)
    gt_classes = torch.zeros(batch_size, M, dtype=torch.long)
    gt_valid = torch.zeros(batch_size, M, dtype=torch.bool)
    raw = torch.empty(batch_size, A, 4)
    cand_counts = []
    for b, n in enumerate(counts):
        gts = _gt_boxes(n, image_size, gen)
        gt_boxes[b, :n], gt_valid[b, :n] = gts, True
        gt_classes[b, :n] = _gt_classes(n, num_classes, gen)
        prior = _prior_mask(gts, grid)  # (n, A)
        cand_counts.append(int(prior.any(0).sum()))
        raw[b] = _early_training_raw(gts, prior, grid, gen)
    # logits around the prior bias, as the head is initialised; the noise makes the class costs differ
    cls_logits = PRIOR_BIAS + 0.5 * torch.randn(batch_size, A, num_classes, generator=gen)
    obj_logits = PRIOR_BIAS + 1.0 * torch.randn(batch_size, A, generator=gen)
    pred_boxes = decode_boxes(raw, grid)
    dev = torch.device(device)
    grid = AnchorGrid(grid.x_shifts.to(dev), grid.y_shifts.to(dev), grid.strides.to(dev), grid.level_shapes)
    return ScenarioBatch(pred_boxes.to(dev), cls_logits.to(dev), obj_logits.to(dev), gt_boxes.to(dev),
                         gt_classes.to(dev), gt_valid.to(dev), grid, counts, cand_counts)


# ----------------------------------------------------------------------------------------------------------
# Memory estimates (decide what to skip before running it)
# ----------------------------------------------------------------------------------------------------------
def estimate_assign_bytes(mode, gt_counts, cand_counts, num_anchors, num_classes, image_width, pack_width=10000):
    """Estimated peak bytes of `mode` on a batch, or None where it is not estimated ("batched").

    loop: the largest image's (G, C, K) float class-cost tensor; packed: per sub-batch of total width <= pack_width,
    the (sum G, sum C, K) one plus its float64 (sum G, n * A) centre-prior comparisons; calibrated on measured peaks.
    """
    K = num_classes
    if mode == "loop":
        return GCK_PEAK_FACTOR * 4 * K * max((g * c for g, c in zip(gt_counts, cand_counts)), default=0)
    if mode == "packed":
        worst = 0
        for group in pack_sub_batches([int(image_width)] * len(gt_counts), pack_width):
            sum_g = sum(gt_counts[i] for i in group)
            sum_c = sum(cand_counts[i] for i in group)
            prior = PACKED_BYTES_PER_PRIOR_CELL * sum_g * len(group) * num_anchors
            worst = max(worst, GCK_PEAK_FACTOR * 4 * K * sum_g * sum_c + prior)
        return worst
    return None


# ----------------------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------------------
def _same_assignment(a, b):
    return bool(torch.equal(a.fg_mask, b.fg_mask) and torch.equal(a.matched_gt[a.fg_mask], b.matched_gt[b.fg_mask]))


def _machine(device):
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "device": str(device)}
    if hasattr(os, "getloadavg"):
        info["load_avg_start"] = [round(x, 2) for x in os.getloadavg()]
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _run_cell(cfg: BenchConfig, batch: ScenarioBatch, mode, reference):
    """Measure one (scenario, mode, batch) cell; returns (record fields, assignment or None)."""
    est = estimate_assign_bytes(mode, batch.gt_counts, batch.cand_counts, batch.grid.num_anchors, cfg.num_classes,
                                cfg.image_size, cfg.pack_width)
    fields = {"est_gb": None if est is None else est / 1e9}
    if est is not None and est > cfg.max_gb * 1e9:
        fields.update(status="skipped", note=f"skipped (needs ~{est / 1e9:.1f} GB)")
        return fields, None

    def call():
        return assign(mode, *batch.args(), pack_width=cfg.pack_width)

    try:
        result, m = measure_call(call, cfg.repeats, cfg.device, cfg.top_ops, cfg.single_run_above_s)
    except (RuntimeError, MemoryError) as err:  # CPU allocator failures are RuntimeErrors
        logger.warning(f"{mode} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
        fields.update(status="error", note=f"error: {type(err).__name__}")
        return fields, None
    fields.update(status="ok", ms=m.median_ms, times_ms=m.times_ms, peak_mb=m.peak_mb, ops=m.ops, syncs=m.syncs,
                  top_ops=m.top_ops)
    if reference is not None:
        same = _same_assignment(result, reference[1])
        fields["same_as_" + reference[0]] = same
        if not same:
            logger.warning(f"{mode} assigns differently from {reference[0]} on this batch")
    return fields, result


def run_benchmark(cfg: BenchConfig, progress=True) -> Dict:
    """Every (scenario, batch, mode) cell of cfg; returns {"config", "machine", "records", "targets"}."""
    cfg.check()
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_all(cfg, progress)
    finally:
        torch.set_num_threads(threads_before)


def _run_all(cfg: BenchConfig, progress) -> Dict:
    machine = _machine(cfg.device)  # load average before the run
    records = []
    cells = [(s, b) for s in cfg.scenarios for b in cfg.batch_sizes]
    bar = tqdm(total=len(cells) * len(cfg.modes), disable=not progress, desc="bench_assign")
    for scenario, bsz in cells:
        batch = make_scenario(scenario, int(bsz), cfg.image_size, cfg.num_classes, cfg.gt_scale, cfg.seed, cfg.device)
        reference = None
        for mode in cfg.modes:
            bar.set_postfix_str(f"{scenario} b={bsz} {mode}")
            fields, result = _run_cell(cfg, batch, mode, reference)
            if reference is None and result is not None:
                reference = (mode, result)  # later modes are checked against the first that ran
            records.append({"scenario": scenario, "batch": int(bsz), "mode": mode, "image_size": cfg.image_size,
                            "gts": sum(batch.gt_counts), "max_gts": max(batch.gt_counts),
                            "candidates": sum(batch.cand_counts), **fields})
            bar.update(1)
            del result
    bar.close()
    report = {"config": {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in asdict(cfg).items()},
              "machine": machine, "records": records}
    if hasattr(os, "getloadavg"):
        report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = evaluate_targets(records)
    return report


# ----------------------------------------------------------------------------------------------------------
# Table and targets
# ----------------------------------------------------------------------------------------------------------
def _cell(rec, key):
    if rec is None:
        return ""
    if rec["status"] != "ok":
        return rec["note"] if key == "ms" else "-"
    value = rec[key]
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def format_table(records, tablefmt="github") -> str:
    """One row per (scenario, batch); per mode its median ms, peak MB, ops dispatched and host syncs."""
    modes = [m for m in SIMOTA_MODES if any(r["mode"] == m for r in records)]
    index = {(r["scenario"], r["batch"], r["mode"]): r for r in records}
    keys = sorted({(r["scenario"], r["batch"]) for r in records},
                  key=lambda k: (SCENARIOS.index(k[0]) if k[0] in SCENARIOS else 99, k[1]))
    headers = ["scenario", "B", "gts (max)"] + [f"{m} {k}" for m in modes for k in ("ms", "MB", "ops", "syncs")]
    rows = []
    for scenario, bsz in keys:
        any_rec = next(r for r in records if r["scenario"] == scenario and r["batch"] == bsz)
        row = [scenario, bsz, f"{any_rec['gts']} ({any_rec['max_gts']})"]
        for m in modes:
            rec = index.get((scenario, bsz, m))
            row += [_cell(rec, k) for k in ("ms", "peak_mb", "ops", "syncs")]
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


@dataclass
class Target:
    name: str
    met: Optional[bool]  # None: not measured
    detail: str
    values: Dict = field(default_factory=dict)

    def line(self):
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[self.met]
        return f"[{verdict}] {self.name}: {self.detail}"


def _ok(records, scenario, mode, batch):
    for r in records:
        if (r["scenario"], r["mode"], r["batch"]) == (scenario, mode, batch) and r["status"] == "ok":
            return r
    return None


def evaluate_targets(records, batch=16, max_syncs=3) -> List[Dict]:
    """The targets of issue 3 at the reference batch: speed and memory of "batched" against "loop" on coco,
    "batched" host syncs constant and <= max_syncs over batch sizes, and "batched" no slower than "loop" on the
    crowded scenarios."""
    targets = []
    loop, bat = _ok(records, "coco", "loop", batch), _ok(records, "coco", "batched", batch)
    if loop and bat:
        speedup = loop["ms"] / bat["ms"]
        targets.append(Target(f"coco B={batch}: batched speed-up over loop >= 10x", speedup >= 10,
                              f"{speedup:.2f}x (loop {loop['ms']:.1f} ms, batched {bat['ms']:.1f} ms)",
                              {"speedup": speedup}))
        ratio = bat["peak_mb"] / loop["peak_mb"] if loop["peak_mb"] > 0 else float("inf")
        targets.append(Target(f"coco B={batch}: batched peak memory / loop peak memory <= 1", ratio <= 1,
                              f"{ratio:.2f} (loop {loop['peak_mb']:.1f} MB, batched {bat['peak_mb']:.1f} MB)",
                              {"memory_ratio": ratio}))
    else:
        targets.append(Target(f"coco B={batch}: batched vs loop speed and memory", None,
                              f"needs coco at B={batch} in both loop and batched"))
    for scenario in sorted({r["scenario"] for r in records}, key=lambda s: SCENARIOS.index(s)):
        syncs = {r["batch"]: r["syncs"] for r in records
                 if r["scenario"] == scenario and r["mode"] == "batched" and r["status"] == "ok"}
        if not syncs:
            continue
        values = sorted(set(syncs.values()))
        met = len(values) == 1 and values[0] <= max_syncs
        detail = ", ".join(f"B={b}: {s}" for b, s in sorted(syncs.items()))
        targets.append(Target(f"{scenario}: batched host syncs per batch <= {max_syncs} and equal for all sizes", met,
                              detail, {"syncs": syncs}))
    for scenario in ("crowded", "one1000"):
        loop, bat = _ok(records, scenario, "loop", batch), _ok(records, scenario, "batched", batch)
        if loop and bat:
            targets.append(Target(f"{scenario} B={batch}: batched time <= loop time", bat["ms"] <= loop["ms"],
                                  f"batched {bat['ms']:.1f} ms, loop {loop['ms']:.1f} ms",
                                  {"batched_ms": bat["ms"], "loop_ms": loop["ms"]}))
        elif any(r["scenario"] == scenario for r in records):
            targets.append(Target(f"{scenario} B={batch}: batched time <= loop time", None,
                                  f"needs {scenario} at B={batch} in both loop and batched"))
    return [asdict(t) | {"line": t.line()} for t in targets]


def format_targets(targets: List[Dict], image_size=640) -> str:
    """The targets block: a heading, then one 'met / NOT MET' line per target with its figures."""
    note = "" if image_size == 640 else "; the targets are set at 640"
    head = f"targets (at {image_size}x{image_size}{note})"
    return "\n".join([head] + ["  " + t["line"] for t in targets])
