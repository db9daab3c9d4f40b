"""BaseExp: the abstract experiment (factories to implement), command-line `key value` overrides, a table repr."""
import ast
import difflib
import os
import pprint
import sys
from abc import ABCMeta, abstractmethod

from tabulate import tabulate

__all__ = ["BaseExp"]

# Settings whose None means "no limit" even where an Exp (or the class it derives from) sets a number:
# `max_train_minutes None` on the command line makes a run with a budget open-ended.
NONE_MEANS_OFF = ("max_train_minutes", "patience", "stall_timeout", "heartbeat_timeout")

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")


class BaseExp(metaclass=ABCMeta):
    """Basic class for any experiment: subclasses provide the model, data, optimizer, scheduler and evaluator."""

    def __init__(self):
        self.seed = None
        self.output_dir = "./YOLOX_outputs"
        self.print_interval = 100
        self.eval_interval = 10
        self.dataset = None
        # the base name of the file that defines this Exp class, e.g. "yolox_s", as the official files set it
        self.exp_name = _defining_file_stem(type(self))

    @abstractmethod
    def get_model(self):
        pass

    @abstractmethod
    def get_dataset(self, cache: bool = False, cache_type: str = "ram"):
        pass

    @abstractmethod
    def get_data_loader(self, batch_size: int, is_distributed: bool):
        pass

    @abstractmethod
    def get_optimizer(self, batch_size: int):
        pass

    @abstractmethod
    def get_lr_scheduler(self, lr: float, iters_per_epoch: int, **kwargs):
        pass

    @abstractmethod
    def get_evaluator(self):
        pass

    @abstractmethod
    def eval(self, model, evaluator, weights):
        pass

    def _public_attributes(self):
        # the built model, optimizer and dataset are objects, not settings: keep them out of the table
        hidden = ("model", "optimizer", "dataset")
        return [(k, v) for k, v in vars(self).items() if not k.startswith("_") and k not in hidden]

    def __repr__(self):
        table = [(str(k), pprint.pformat(v)) for k, v in self._public_attributes()]
        return tabulate(table, headers=["keys", "values"], tablefmt="fancy_grid")

    def merge(self, cfg_list):
        """Override attributes from `key value` pairs, e.g. ["max_epoch", "100", "input_size", "640,640"].

        Each value is cast to the type of the attribute it replaces: ints, floats, bools ("True"/"False"/"1"/"0"),
        tuples and lists ("640,640", "(640, 640)", "[1,2]"), strings; an attribute that is None takes the value as
        a Python literal when it parses as one ("None", "42", "(10, 20)") and as a string otherwise, and an
        attribute whose default is None (seed, data_dir, random_size) or whose None means "no limit"
        (NONE_MEANS_OFF: max_train_minutes, patience, stall_timeout, heartbeat_timeout) takes "None" or "none" back.
        Unknown keys, values that do not convert and an odd number of items raise ValueError, and then no
        attribute is changed.
        """
        if cfg_list is None:
            return
        cfg_list = list(cfg_list)
        if len(cfg_list) % 2 != 0:
            raise ValueError(
                f"Exp options must come in `key value` pairs; got {len(cfg_list)} items: {cfg_list}. "
                "Check for a missing value or a value containing spaces (quote it)."
            )
        # cast everything first so that a bad pair leaves the Exp unchanged
        updates = {}
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            key = str(key)
            if key.startswith("_") or not hasattr(self, key) or callable(getattr(self, key)):
                raise ValueError(self._unknown_key_message(key))
            if _is_none(value) and (key in NONE_MEANS_OFF or self._default_is_none(key)):
                updates[key] = None  # e.g. seed back to its default None, or a time budget turned off
            else:
                updates[key] = _cast_like(updates.get(key, getattr(self, key)), value, key)
        for key, value in updates.items():
            setattr(self, key, value)

    def _default_is_none(self, key):
        """Whether `key` is None in this Exp's class or in one it derives from (the forest Exp sets
        max_train_minutes, whose base default is None: "None" on the command line gives the base behaviour back)."""
        for cls in type(self).__mro__:
            if not (isinstance(cls, type) and issubclass(cls, BaseExp)) or getattr(cls, "__abstractmethods__", None):
                continue
            try:
                if getattr(cls(), key, None) is None:
                    return True
            except Exception:  # noqa: BLE001 - an Exp that needs constructor arguments: keep strict casting
                continue
        return False

    def _unknown_key_message(self, key):
        names = [k for k, _ in self._public_attributes()]
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"Exp {self.exp_name!r} has no attribute {key!r} to override.{hint} "
            f"Valid keys: {', '.join(sorted(names))}."
        )


def _is_none(value):
    """"None" or "none" from the command line (or None itself)."""
    return value is None or (isinstance(value, str) and value.strip() in ("None", "none"))


def _defining_file_stem(cls):
    """Base name without extension of the file where `cls` is defined (the class name if there is no file)."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not path:
        return cls.__name__
    return os.path.splitext(os.path.basename(path))[0]


def _parse_literal(text):
    """A Python literal from text when it parses as one, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _cast_bool(value, key):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"Exp option {key!r} is a bool; got {value!r}. Use True/False (or 1/0).")


def _cast_number(value, number_type, key):
    if isinstance(value, bool):
        raise ValueError(f"Exp option {key!r} is a {number_type.__name__}; got the bool {value!r}.")
    if isinstance(value, number_type):
        return value
    parsed = _parse_literal(str(value).strip()) if isinstance(value, str) else value
    if number_type is float and isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return float(parsed)
    if number_type is int and isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if number_type is int and isinstance(parsed, float):
        # "3.0" stays an int; a fractional value is kept as a float, as the official merge does for e.g.
        # warmup_lr whose default is the int 0
        return int(parsed) if parsed.is_integer() else parsed
    raise ValueError(f"Exp option {key!r} is a {number_type.__name__}; got {value!r}, which is not one.")


def _split_sequence(value):
    """'640,640', '(640, 640)', '[1,2]' -> ['640', '640'] / ['1', '2']; a real sequence passes through."""
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    while len(text) >= 2 and text[0] + text[-1] in ("()", "[]"):
        text = text[1:-1].strip()
    if not text:
        return []
    return [item.strip() for item in text.split(",") if item.strip() != ""]


def _sequence_item_example(current):
    """A value whose type every new item takes: the first item's, widened to float for mixed numbers like (0.1, 2)."""
    if not current:
        return None  # unknown item type: items are parsed as literals
    numbers = [v for v in current if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(current) and any(isinstance(v, float) for v in numbers):
        return 0.0
    return current[0]


def _cast_like(current, value, key):
    """Cast the command-line `value` to the type of the attribute's `current` value."""
    if current is None:
        return _parse_literal(value.strip()) if isinstance(value, str) else value
    if isinstance(current, bool):
        return _cast_bool(value, key)
    if isinstance(current, (int, float)):
        return _cast_number(value, type(current), key)
    if isinstance(current, (list, tuple)):
        items = _split_sequence(value)
        item_example = _sequence_item_example(current)
        return type(current)(_cast_like(item_example, item, key) for item in items)
    if isinstance(current, str):
        return str(value)
    # any other type: try its constructor, then a Python literal
    try:
        return type(current)(value)
    except Exception:  # noqa: BLE001 - any constructor failure falls back to a literal
        parsed = _parse_literal(value) if isinstance(value, str) else value
        if parsed is value and isinstance(value, str):
            raise ValueError(
                f"Exp option {key!r} holds a {type(current).__name__}; cannot convert {value!r} to it."
            ) from None
        return parsed
