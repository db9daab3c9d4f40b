"""What the benchmark command lines share: argparse types, the checks of their comma-separated lists, --json."""
import argparse
import json

__all__ = ["model_sizes", "choice_list", "int_list", "write_json", "print_and_save"]


def model_sizes(text):
    """argparse type of the benchmarks' --models: "yolox-nano:416,yolox-s:640" -> (("yolox-nano", 416), ...)."""
    out = []
    for item in text.split(","):
        name, _, size = item.partition(":")
        if not size.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: expected name:size, e.g. yolox-nano:416")
        out.append((name.strip(), int(size)))
    return tuple(out)


def choice_list(text, choices, flag):
    """"a,b" -> ("a", "b"), each one of `choices`; a one-line ValueError naming `flag` otherwise."""
    items = tuple(item for item in str(text).split(",") if item)
    bad = [item for item in items if item not in choices]
    if bad or not items:
        raise ValueError(f"{flag} {text!r}: choose from {', '.join(choices)}")
    return items


def int_list(text, flag, low=1, high=None, why=""):
    """"1,8" -> (1, 8), each from low to high (no upper bound when None); a one-line ValueError naming `flag`
    otherwise (`why`: the reason for the bounds, said in it)."""
    try:
        values = tuple(int(item) for item in str(text).split(",") if item)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,8") from None
    if not values or min(values) < low or (high is not None and max(values) > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{flag} {text!r}: sizes {bounds}{f' ({why})' if why else ''}")
    return values


def write_json(path, result):
    """--json: the result as indented JSON at path (nothing when path is empty)."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


def print_and_save(table, result, path):
    """Print a benchmark's table, write its result with --json (path; nothing when empty) and return the result."""
    print(table)
    write_json(path, result)
    return result
