"""argparse types that the benchmark command lines share."""
import argparse

__all__ = ["model_sizes"]


def model_sizes(text):
    """argparse type of the benchmarks' --models: "yolox-nano:416,yolox-s:640" -> (("yolox-nano", 416), ...)."""
    out = []
    for item in text.split(","):
        name, _, size = item.partition(":")
        if not size.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: expected name:size, e.g. yolox-nano:416")
        out.append((name.strip(), int(size)))
    return tuple(out)
