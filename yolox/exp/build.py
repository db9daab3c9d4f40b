"""get_exp: an Exp from a file path (users' Exp files) or from a published model name (yolox-s, yolov3, ...)."""
import hashlib
import importlib
import importlib.util
import os
import sys

from .base_exp import _defining_file_stem

__all__ = ["get_exp", "get_exp_by_file", "get_exp_by_name", "canonical_exp_name", "EXP_NAMES"]

# published model name -> module in yolox.exp.default
EXP_NAMES = {
    "yolox-nano": "yolox_nano",
    "yolox-tiny": "yolox_tiny",
    "yolox-s": "yolox_s",
    "yolox-m": "yolox_m",
    "yolox-l": "yolox_l",
    "yolox-x": "yolox_x",
    "yolov3": "yolov3",
}


def _module_name_for(exp_file):
    """The import name of an Exp file: its base name, as the official release uses, unless that is already taken.

    Keeping the plain base name lets child processes started with 'spawn' unpickle the Exp by module name
    (the file's folder is put on sys.path); a name already used by another module (a file called yolox.py,
    or two exp files with the same base name) gets a unique name instead.
    """
    stem = os.path.splitext(os.path.basename(exp_file))[0]
    existing = sys.modules.get(stem)
    if stem.isidentifier() and (
        existing is None or os.path.realpath(getattr(existing, "__file__", "") or "") == exp_file
    ):
        return stem
    digest = hashlib.sha1(exp_file.encode()).hexdigest()[:8]
    return f"_yolox_exp_{''.join(c if c.isalnum() else '_' for c in stem)}_{digest}"


def get_exp_by_file(exp_file):
    """Load the `Exp` class of a Python file and return an instance of it."""
    exp_file = os.path.realpath(os.path.expanduser(str(exp_file)))
    if not os.path.isfile(exp_file):
        raise FileNotFoundError(f"Exp file {exp_file} does not exist; check the path given with -f/--exp_file.")
    module_name = _module_name_for(exp_file)
    spec = importlib.util.spec_from_file_location(module_name, exp_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"Exp file {exp_file} cannot be imported as Python; it must be a .py file defining `Exp`.")
    module = importlib.util.module_from_spec(spec)
    exp_dir = os.path.dirname(exp_file)
    if exp_dir not in sys.path:
        sys.path.append(exp_dir)  # as the official release does: sibling imports and spawn workers find it
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    exp_cls = getattr(module, "Exp", None)
    if not isinstance(exp_cls, type):
        raise ImportError(
            f"Exp file {exp_file} does not define a class named `Exp`; "
            "write `class Exp(yolox.exp.Exp): ...` (see exps/yolox_s.py)."
        )
    exp = exp_cls()
    # a thin file that re-exports an Exp (like exps/yolox_s.py) or a copy of one is named after itself, unless
    # the Exp set its own exp_name
    if getattr(exp, "exp_name", None) == _defining_file_stem(exp_cls):
        exp.exp_name = os.path.splitext(os.path.basename(exp_file))[0]
    return exp


def canonical_exp_name(exp_name):
    """'yolox_s', 'YOLOX-S' -> 'yolox-s'; ValueError listing the valid names for an unknown one."""
    name = str(exp_name).strip().lower().replace("_", "-")
    if name not in EXP_NAMES:
        raise ValueError(f"Unknown exp name {exp_name!r}; valid names: {', '.join(EXP_NAMES)}.")
    return name


def get_exp_by_name(exp_name):
    """The Exp of a published model: yolox-nano, -tiny, -s, -m, -l, -x or yolov3 (underscores work too)."""
    module_stem = EXP_NAMES[canonical_exp_name(exp_name)]
    module = importlib.import_module(f"yolox.exp.default.{module_stem}")
    return module.Exp()


def get_exp(exp_file=None, exp_name=None):
    """An Exp from exp_file (a path, which wins when both are given) or from a published model name."""
    if exp_file is not None:
        return get_exp_by_file(exp_file)
    if exp_name is not None:
        return get_exp_by_name(exp_name)
    raise ValueError(
        "get_exp needs an exp file (-f path/to/exp.py) or a model name (-n yolox-s); "
        f"valid names: {', '.join(EXP_NAMES)}."
    )
