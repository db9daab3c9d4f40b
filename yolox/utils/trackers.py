"""What the experiment trackers of `-l wandb` and `-l mlflow` share: importing their optional package with a clear
message, the run's settings as plain values, and typed command-line values."""
import importlib

__all__ = ["LoggerPackageMissing", "import_logger_package", "run_params"]


class LoggerPackageMissing(ValueError):
    """The package of `-l wandb` or `-l mlflow` is not installed; the message says how to install it."""


def import_logger_package(name):
    """Import the tracker package `name` ("wandb" or "mlflow") on demand: both are optional extras of setup.py."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:  # the package is there but one of its own dependencies is not
            raise LoggerPackageMissing(
                f"-l {name}: importing {name} failed ({e}); reinstall it: pip install -e '.[{name}]'"
            ) from None
        raise LoggerPackageMissing(
            f"-l {name} needs the {name} package: pip install -e '.[{name}]' (or pip install {name})"
        ) from None


_PLAIN = (bool, int, float, str, type(None))


def _plain_value(value):
    """(value, True) for numbers, strings, None and tuples, lists and dicts of them (tuples become lists);
    (None, False) for an object (a dataset, a model) that a tracker cannot show."""
    if isinstance(value, _PLAIN):
        return value, True
    if isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value), True
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, _PLAIN) for k, v in value.items()):
        return dict(value), True
    return None, False


def run_params(exp, args=None):
    """The Exp's public settings, and the command-line arguments as `args.<name>`, for a tracker's config.

    Attributes holding objects (the built model, a dataset, ...) are left out: only plain values are kept.
    """
    params = {}
    for prefix, source in (("", exp), ("args.", args)):
        if source is None:
            continue
        for key, value in vars(source).items():
            if key.startswith("_") or callable(value):
                continue
            value, plain = _plain_value(value)
            if plain:
                params[prefix + key] = value
    return params


def _as_bool(value, what):
    """True/False from a bool or from "true"/"false"/"1"/"0"/"yes"/"no" (any case); ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "none", ""):
        return False
    raise ValueError(f"{what} takes True or False; got {value!r}")


def _as_literal(text):
    """A command-line value as a bool, int, float or None when it reads as one, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
