#!/usr/bin/env python
"""Throughput of Mosaic+MixUp at 640: the fast MosaicDetection vs a direct implementation of the official algorithm,
in one process and through a DataLoader with N workers; `--rss` adds process memory over 2000 samples.

    python benchmarks/bench_data.py                        # bundled forest data, RAM cache, table
    python benchmarks/bench_data.py --workers 1,2 --json   # machine-readable
    python benchmarks/bench_data.py --rss --samples-rss 2000
    python benchmarks/bench_data.py --no-cache --with-transform   # JPEGs decoded per sample, against the decode floor
    python benchmarks/bench_data.py --with-transform --official /src/yolox-0.3.0:/src/deps   # and the release itself
"""
import argparse
import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from loguru import logger  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks.data_pipeline import (  # noqa: E402
    DECODES_PER_SAMPLE,
    decode_seconds,
    default_train_transform,
    loader_samples_per_second,
    make_mosaic,
    memory_over_samples,
    recorded_reads,
    replay_seconds,
    samples_per_second,
)
from benchmarks.official_data_pipeline import official_samples_per_second  # noqa: E402
from yolox.data import COCODataset, get_yolox_datadir  # noqa: E402
from yolox.utils.heap import keep_image_buffers_in_heap  # noqa: E402

__all__ = ["parse_args", "main"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(get_yolox_datadir(), "forest"), help="COCO-format folder")
    p.add_argument("--ann", default="train.json", help="annotation file under <data-dir>/annotations/")
    p.add_argument("--name", default="train", help="image folder under <data-dir>")
    p.add_argument("--size", type=int, default=640, help="input size (square)")
    p.add_argument("--samples", type=int, default=400, help="samples timed per measurement")
    p.add_argument("--workers", type=str, default="1,2",
                   help="comma-separated DataLoader worker counts to time (default 1,2; 0 or empty: skip)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-cache", action="store_true", help="decode images from disk instead of the RAM cache")
    p.add_argument("--with-transform", action="store_true", help="also time Mosaic+MixUp followed by TrainTransform")
    p.add_argument("--rounds", type=int, default=1,
                   help="one-process measurements repeated, alternating the implementations; medians reported")
    p.add_argument("--official", default=None,
                   help="folder of an unpacked official release[:folder of its dependency thop]: also time the "
                        "release's own pipeline in one process")
    p.add_argument("--cv2-threads", type=int, default=1,
                   help="OpenCV threads in this process (default 1: one core per process, as in the workers)")
    p.add_argument("--no-heap-tuning", action="store_true",
                   help="keep glibc's malloc defaults, in this process and the workers (YOLOX_MALLOC_TUNING=0)")
    p.add_argument("--rss", action="store_true", help="record process memory over --samples-rss samples with workers")
    p.add_argument("--samples-rss", type=int, default=2000)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return p.parse_args(argv)


def main(argv=None):
    """The benchmark with the flags argv (default sys.argv[1:]); returns the result (printed with --json)."""
    args = parse_args(argv)
    size = (args.size, args.size)
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints; keep stdout for the table / JSON
        dataset = COCODataset(args.data_dir, args.ann, args.name, img_size=size, cache=not args.no_cache)
    worker_counts = [int(n) for n in str(args.workers).split(",") if n.strip() and int(n) > 0]
    cv2.setNumThreads(args.cv2_threads)
    rows, result = [], {"input_size": size, "cv2_threads": cv2.getNumThreads(), "throughput": []}
    if args.no_heap_tuning:
        os.environ["YOLOX_MALLOC_TUNING"] = "0"  # read by this process and by the workers
    # as in the trainer's data processes (yolox.utils.heap)
    result["heap_tuning"] = keep_image_buffers_in_heap()
    stages = [("mosaic+mixup", lambda impl: None)]
    if args.with_transform:  # each side with its own TrainTransform: the official algorithm beside the trainer's
        stages.append(("mosaic+mixup+TrainTransform", default_train_transform))
    # one-process figures: rounds alternate the release, direct and fast, each side keeps its median round
    official_rounds, decode_s, replay_s = [], [], []
    singles = {stage: {"direct": [], "fast": []} for stage, _ in stages}
    # the fast path reads only the tiles that show, some of them reduced: which reads its samples make
    reads = recorded_reads(make_mosaic(dataset, "fast", size), dataset, args.samples) if args.no_cache else None
    for r in range(args.rounds):
        if args.no_cache:  # the decode floor: samples/s if a sample cost nothing but its JPEG decodes
            decode_s.append(decode_seconds(dataset, args.samples, seed=r))
            replay_s.append(replay_seconds(dataset, reads))  # the fast path's own decodes, alone
        if args.official:  # the release's own pipeline, in a subprocess with glibc's defaults
            official_rounds.append(official_samples_per_second(
                args.official, args.data_dir, args.ann, args.name, size, args.samples, cache=not args.no_cache,
                with_transform=args.with_transform))
        for stage, preproc in stages:
            for impl in ("direct", "fast"):
                singles[stage][impl].append(
                    samples_per_second(make_mosaic(dataset, impl, size, preproc(impl)), args.samples))
    official = None
    if official_rounds:
        official = {stage: float(np.median([r[stage] for r in official_rounds])) for stage in official_rounds[0]}
        result["official_release_one_process"] = official
    result["rounds"] = args.rounds
    floor = None
    if args.no_cache:  # decodes timed in every round too, and once more after them: the same machine state
        decode_s.append(decode_seconds(dataset, args.samples, seed=args.rounds))
        floor = 1.0 / (DECODES_PER_SAMPLE * float(np.mean(decode_s)))
        result["decode_ms_per_image"] = 1000 * float(np.mean(decode_s))
        result["decode_floor_samples_per_s"] = floor
        own_floor = args.samples / float(np.median(replay_s))
        result["fast_reads_per_sample"] = len(reads) / args.samples
        result["fast_reduced_reads_per_sample"] = sum(1 for _, red in reads if red > 1) / args.samples
        result["fast_own_decodes_floor_samples_per_s"] = own_floor
    for stage, preproc in stages:
        single = {impl: float(np.median(v)) for impl, v in singles[stage].items()}
        workers = {n: {impl: loader_samples_per_second(make_mosaic(dataset, impl, size, preproc(impl)), n,
                                                      args.samples, args.batch_size)
                       for impl in ("direct", "fast")}
                   for n in worker_counts}
        impls = ("direct", "fast")
        if official is not None:
            single["official release"] = official[stage]
            impls = ("official release",) + impls
        for impl in impls:
            entry = {"stage": stage, "impl": impl, "one_process": single[impl],
                     "speedup_one_process": single[impl] / single["direct"]}
            row = [stage, impl, f"{single[impl]:.1f}", f"{single[impl] / single['direct']:.2f}x"]
            if official is not None:
                entry["vs_official_release"] = single[impl] / official[stage]
                row.append(f"{single[impl] / official[stage]:.2f}x")
            if floor is not None:
                entry["of_decode_floor"] = single[impl] / floor
                if impl in singles[stage]:  # each round against the decodes timed just before and just after it
                    entry["of_decode_floor_by_round"] = [
                        sps * DECODES_PER_SAMPLE * 0.5 * (decode_s[r] + decode_s[r + 1])
                        for r, sps in enumerate(singles[stage][impl])]
                # direct decodes 5 whole images per sample: its own decodes are the floor's
                own = own_floor if impl == "fast" else floor if impl == "direct" else None
                entry["of_own_decodes_floor"] = single[impl] / own if own else None
                row += [f"{single[impl] / floor:.2f}", f"{single[impl] / own:.2f}" if own else "-"]
            entry["with_workers"] = {}
            for n, by_impl in workers.items():
                if impl in by_impl:
                    entry["with_workers"][n] = by_impl[impl]
                    row += [f"{by_impl[impl]:.1f}", f"{by_impl[impl] / by_impl['direct']:.2f}x"]
                else:
                    row += ["-", "-"]
            result["throughput"].append(entry)
            rows.append(row)

    mem_rows = []
    if args.rss:
        mosaic = make_mosaic(dataset, "fast", size, default_train_transform())
        mem_rows = memory_over_samples(mosaic, max(worker_counts or [1]), args.samples_rss, batch_size=16)
        result["memory"] = [dict(zip(("samples", "main_rss_mib", "workers_rss_mib", "workers_private_mib"), r))
                            for r in mem_rows]
        first, last = mem_rows[1] if len(mem_rows) > 1 else mem_rows[0], mem_rows[-1]
        result["memory_growth_mib"] = {"main_rss": last[1] - first[1], "workers_private": last[3] - first[3]}

    if args.json:
        print(json.dumps(result, indent=1))
        return result
    headers = ["stage", "impl", "samples/s (1 process)", "vs direct"]
    if official is not None:
        headers.append("vs official release")
    if floor is not None:
        headers += ["of decode floor", "of its own decodes"]
    for n in worker_counts:
        headers += [f"samples/s ({n} worker{'s' if n > 1 else ''})", "vs direct"]
    logger.info(f"input {size}, cv2 threads {cv2.getNumThreads()}, {args.samples} samples per measurement, "
                f"medians of {args.rounds} round(s) in one process, "
                f"{'images decoded from the files' if args.no_cache else 'RAM cache'}, "
                f"image buffers {'kept in the heap' if result['heap_tuning'] else 'with glibc malloc defaults'}")
    if floor is not None:
        logger.info(f"decode: {result['decode_ms_per_image']:.2f} ms per image, {DECODES_PER_SAMPLE} per sample: "
                    f"floor {floor:.1f} samples/s in one process")
        logger.info(f"fast path: {result['fast_reads_per_sample']:.2f} images read per sample (the tiles that show "
                    f"and the MixUp image; {result['fast_reduced_reads_per_sample']:.2f} of them decoded reduced): "
                    f"those decodes alone {own_floor:.1f} samples/s")
    for entry in result["throughput"]:
        if entry.get("of_decode_floor_by_round"):
            by_round = ", ".join(f"{v:.2f}" for v in entry["of_decode_floor_by_round"])
            logger.info(f"{entry['stage']}, {entry['impl']}: of the decode floor by round {by_round}")
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    if mem_rows:
        print()
        print(tabulate([[s, f"{a:.1f}", f"{b:.1f}", f"{c:.1f}"] for s, a, b, c in mem_rows],
                       headers=["samples", "main RSS MiB", "workers RSS MiB", "workers private MiB"],
                       tablefmt="github"))
        g = result["memory_growth_mib"]
        print(f"growth after warm-up: main RSS {g['main_rss']:+.1f} MiB, "
              f"workers private {g['workers_private']:+.1f} MiB")
    return result


if __name__ == "__main__":
    main()
