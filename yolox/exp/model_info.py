"""Build the published models through get_exp and measure them: params, GFLOPs, output shape, forward time."""
import gc

import torch
from tabulate import tabulate

from .build import EXP_NAMES, canonical_exp_name, get_exp_by_name

__all__ = ["describe_model", "describe_models", "format_model_table"]


def describe_model(exp_name, runs=1, warmup=1, device="cpu", seed=0):
    """One row for the published model `exp_name`: a real eval-mode forward pass at the exp's test_size."""
    from yolox.utils import profile_model

    torch.manual_seed(seed)
    exp_name = canonical_exp_name(exp_name)
    exp = get_exp_by_name(exp_name)
    model = exp.get_model().to(device).eval()
    stats = profile_model(model, exp.test_size, runs=runs, warmup=warmup, seed=seed)
    return {
        "model": exp_name,
        "input_size": tuple(exp.test_size),
        "params": stats["params"],
        "gflops": round(stats["gflops"], 2),
        "output_shape": stats["output_shape"],
        "forward_ms": round(stats["forward_ms"], 1),
    }


def describe_models(names=None, runs=1, warmup=1, device="cpu", seed=0, progress=None):
    """Rows of describe_model for each name (all published models by default), built one at a time.

    progress: optional callable(name) called before each model, for a progress line.
    """
    # resolve every name first: a typo fails at once, not after the big models have run
    names = list(EXP_NAMES) if not names else [canonical_exp_name(n) for n in names]
    rows = []
    for name in names:
        if progress is not None:
            progress(name)
        rows.append(describe_model(name, runs=runs, warmup=warmup, device=device, seed=seed))
        gc.collect()  # the larger models hold hundreds of MB; free each before building the next
    return rows


def format_model_table(rows, tablefmt="github"):
    """The rows of describe_models as a text table."""
    headers = ["model", "input size", "params", "GFLOPs", "output shape", "forward ms"]
    table = [
        (
            r["model"],
            "x".join(str(s) for s in r["input_size"]),
            f"{r['params']:,}",
            f"{r['gflops']:.2f}",
            str(tuple(r["output_shape"])),
            f"{r['forward_ms']:.1f}",
        )
        for r in rows
    ]
    return tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True)
