#!/usr/bin/env python
"""Benchmark the SimOTA modes (loop, packed, batched) at 640 on seeded scenarios: median ms, peak MB, ops, host syncs.

    python benchmarks/bench_assign.py                  # every scenario, mode and batch size 2..64
    python benchmarks/bench_assign.py --quick          # a subset in about a minute or two
    python benchmarks/bench_assign.py --scenarios coco --batch-sizes 16 --json out.json
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: run anywhere

from loguru import logger  # noqa: E402

from benchmarks.assign import (  # noqa: E402
    DEFAULT_BATCH_SIZES, SCENARIOS, BenchConfig, format_table, format_targets, run_benchmark,
)
from yolox.models.simota import SIMOTA_MODES  # noqa: E402
from yolox.tools.cli import run_cli  # noqa: E402

__all__ = ["parse_args", "build_config", "run", "main"]

# about 1-2 minutes on 2 shared cores: the reference batch 16 and a small one, one timed run, packed only when small
QUICK = {"batch_sizes": (2, 16), "repeats": 1, "max_gb": 2.5}


def _csv(kind, choices=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if kind is int:
            try:
                items = [int(t) for t in items]
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 2,16")
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{bad} not in {', '.join(choices)}")
        return tuple(items)
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", type=_csv(str, SCENARIOS), default=None,
                   help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)")
    p.add_argument("--modes", type=_csv(str, SIMOTA_MODES), default=None,
                   help=f"comma-separated, from {','.join(SIMOTA_MODES)} (default: all)")
    p.add_argument("--batch-sizes", type=_csv(int), default=None,
                   help=f"comma-separated (default: {','.join(map(str, DEFAULT_BATCH_SIZES))})")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per cell, median reported (default 3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--size", type=int, default=640, help="square input size")
    p.add_argument("--max-gb", type=float, default=None,
                   help="skip loop/packed cells whose estimated memory exceeds this many GB (default 8; --quick 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared machine more threads mostly measure "
                        "contention; 0 keeps torch's default)")
    p.add_argument("--pack-width", type=int, default=10000, help="packed mode: total width of a sub-batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="write the results as JSON to PATH, or print them with --json alone")
    p.add_argument("--quick", action="store_true",
                   help=f"batch sizes {QUICK['batch_sizes']}, {QUICK['repeats']} repeat and --max-gb "
                        f"{QUICK['max_gb']} unless given")
    p.add_argument("--top-ops", type=int, default=0, metavar="N",
                   help="also print the N ops with the most self time for each batched cell")
    return p.parse_args(argv)


def build_config(args) -> BenchConfig:
    quick = QUICK if args.quick else {}
    return BenchConfig(
        image_size=args.size,
        scenarios=args.scenarios or SCENARIOS,
        modes=args.modes or SIMOTA_MODES,
        batch_sizes=args.batch_sizes or quick.get("batch_sizes", DEFAULT_BATCH_SIZES),
        repeats=args.repeats if args.repeats is not None else quick.get("repeats", 3),
        device=args.device,
        max_gb=args.max_gb if args.max_gb is not None else quick.get("max_gb", 8.0),
        threads=args.threads,
        pack_width=args.pack_width,
        seed=args.seed,
        top_ops=max(args.top_ops, 8),
    )


def run(argv=None):
    """The benchmark with the flags argv (default sys.argv[1:]); returns the report (also written with --json)."""
    args = parse_args(argv)
    cfg = build_config(args)
    report = run_benchmark(cfg, progress=args.json != "-")
    if args.json == "-":
        print(json.dumps(report, indent=1))
        return report
    m = report["machine"]
    logger.info(f"torch {m['torch']} on {m['device']}, {m['threads']} threads, load average "
                f"{m.get('load_avg_start')} -> {m.get('load_avg_end')}, {cfg.repeats} timed runs per cell")
    print(format_table(report["records"]))
    print()
    print(format_targets(report["targets"], cfg.image_size))
    if args.top_ops:
        for r in report["records"]:
            if r["mode"] == "batched" and r["status"] == "ok":
                ops = ", ".join(f"{n} {ms:.1f} ms x{c}" for n, ms, c in r["top_ops"][:args.top_ops])
                print(f"batched {r['scenario']} B={r['batch']}: {ops}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        logger.info(f"results written to {args.json}")
    return report


def main(argv=None):
    """Run the command line with argv (default sys.argv[1:]); exits 2 on a user error, 1 on a failure."""
    return run_cli(run, argv)


if __name__ == "__main__":
    main()
