"""Every public name of the official package (../shared/reference/official_public_api.txt, copied to
tests/data/official_public_api.txt) is importable from the module it names, with the official parameters."""
import __future__
import datetime
import importlib
import inspect
import re
import typing
from pathlib import Path

import numpy
import pytest
import torch

import yolox

API_FILE = Path(__file__).parent / "data" / "official_public_api.txt"
# yolox.layers is the official C++ build step of a faster COCO evaluation; the tools and hubconf are tested apart
SKIPPED_PREFIXES = ("yolox.layers.", "yolox.tools", "hubconf")
_LINE = re.compile(r"^(?P<name>yolox\.[\w.]+): (?P<kind>def|class|tuple)\s*(?:\((?P<sig>.*)\))?(?:\s*->.*)?$")


def _reference_entries():
    entries = []
    for line in API_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(SKIPPED_PREFIXES):
            continue
        match = _LINE.match(line)
        assert match, f"cannot parse reference line {line!r}"
        entries.append((match["name"], match["kind"], match["sig"]))
    return entries


def _reference_signature(sig):
    """inspect.Signature of the reference text, annotations left unevaluated, defaults evaluated."""
    from yolox.data.datasets.voc import AnnotationTransform

    namespace = {"timedelta": datetime.timedelta, "AnnotationTransform": AnnotationTransform,
                 "Optional": typing.Optional, "Sequence": typing.Sequence, "nn": torch.nn, "numpy": numpy,
                 "yolox": yolox}
    code = compile(f"def _reference({sig}): pass", "<reference>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)
    return inspect.signature(namespace["_reference"])


# (name, parameter): defaults changed on purpose, each documented in the docstring and checked in a test below
FIXED_DEFAULTS = {
    # the official default is one AnnotationTransform shared by every dataset (its box counts add up); None gives
    # each dataset its own
    ("yolox.data.VOCDetection", "target_transform"),
    ("yolox.data.datasets.VOCDetection", "target_transform"),
}


def _normalised(value):
    """Defaults compared by value; lists and tuples alike (this package uses immutable tuples); objects by type."""
    if isinstance(value, (list, tuple)):
        return tuple(_normalised(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, bytes, datetime.timedelta)):
        return value
    return ("instance of", type(value).__qualname__)


def signature_differences(reference, ours, fixed=()):
    """What a call written against `reference` would find different in `ours` (empty list: compatible); the
    defaults of the parameters named in `fixed` are not compared."""
    problems = []
    ref_params, our_params = list(reference.parameters.values()), list(ours.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ref_pos = [p for p in ref_params if p.kind in positional]
    our_pos = [p for p in our_params if p.kind in positional]
    if [p.name for p in our_pos[: len(ref_pos)]] != [p.name for p in ref_pos]:
        problems.append(f"positional parameters {[p.name for p in our_pos]} do not start with "
                        f"{[p.name for p in ref_pos]}")
    ours_by_name = {p.name: p for p in our_params}
    for p in ref_params:
        mine = ours_by_name.get(p.name)
        if mine is None:
            problems.append(f"parameter {p.name!r} is missing")
            continue
        if mine.kind != p.kind:
            problems.append(f"parameter {p.name!r} is {mine.kind.description}, not {p.kind.description}")
        if p.name not in fixed and _normalised(mine.default) != _normalised(p.default):
            problems.append(f"default of {p.name!r} is {mine.default!r}, not {p.default!r}")
    ref_names = {p.name for p in ref_params}
    for p in our_params:
        extra_ok = p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) or (
            p.default is not inspect.Parameter.empty)
        if p.name not in ref_names and not extra_ok:
            problems.append(f"extra parameter {p.name!r} has no default, so official calls would fail")
    return problems


ENTRIES = _reference_entries()


def test_reference_list_is_complete():
    assert len(ENTRIES) >= 150  # the 0.3.0 list, without yolox.layers and the tools


@pytest.mark.parametrize("name,kind,sig", ENTRIES, ids=[e[0] for e in ENTRIES])
def test_official_name_with_its_parameters(name, kind, sig):
    module_name, attr = name.rsplit(".", 1)
    module = importlib.import_module(module_name)
    assert hasattr(module, attr), f"{module_name} has no {attr}"
    obj = getattr(module, attr)
    if kind == "tuple":
        assert isinstance(obj, tuple) and obj
        return
    assert inspect.isclass(obj) if kind == "class" else callable(obj) and not inspect.isclass(obj)
    fixed = {param for entry, param in FIXED_DEFAULTS if entry == name}
    problems = signature_differences(_reference_signature(sig or ""), inspect.signature(obj), fixed)
    assert not problems, f"{name}: " + "; ".join(problems)


def test_signature_check_catches_differences():
    def official(a, b=1, c=(1, 2)):
        pass

    def renamed(a, bb=1, c=(1, 2)):
        pass

    def other_default(a, b=2, c=[1, 2]):
        pass

    def extra_required(a, b=1, c=(1, 2), d=None, *, e):
        pass

    def compatible(a, b=1, c=[1, 2], d=None, **kwargs):
        pass

    ref = inspect.signature(official)
    assert signature_differences(ref, inspect.signature(renamed))
    assert signature_differences(ref, inspect.signature(other_default)) == ["default of 'b' is 2, not 1"]
    assert signature_differences(ref, inspect.signature(extra_required))
    assert signature_differences(ref, inspect.signature(compatible)) == []


def test_voc_default_target_transform_is_an_annotation_transform_per_dataset(tmp_path):
    from yolox.data import VOCDetection
    from yolox.data.datasets.voc import AnnotationTransform

    folder = tmp_path / "VOC2007" / "ImageSets" / "Main"
    folder.mkdir(parents=True)
    (folder / "test.txt").write_text("")
    first = VOCDetection(str(tmp_path), image_sets=[("2007", "test")])
    second = VOCDetection(str(tmp_path), image_sets=[("2007", "test")])
    assert isinstance(first.target_transform, AnnotationTransform)
    assert first.target_transform is not second.target_transform
