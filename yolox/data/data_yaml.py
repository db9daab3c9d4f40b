"""The data.yaml of the Ultralytics YOLO-txt layout: dataset root, split sources and class names, checked on reading."""
import os
from dataclasses import dataclass, field

__all__ = ["DataYaml", "read_data_yaml", "IMAGE_SUFFIXES", "SPLITS"]

# suffixes (compared lower-case) of the files a split folder or list contributes as images
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
_REQUIRED = ("train", "val", "names")


@dataclass(frozen=True)
class DataYaml:
    """A read data.yaml. `names[k]` and `ids[k]` are the name and label-file class id of contiguous class index k.

    With `names` given as a dict {id: name} the ids may have gaps or be listed in any order: the classes are
    ordered by id, so class index k is the position of its id among the sorted ids (ids 0, 2, 5 -> indices 0, 1, 2).
    """

    path: str  # the yaml file (absolute)
    root: str  # the dataset root (absolute): split sources are relative to it
    splits: dict = field(compare=False)  # "train" / "val" / "test" -> list of sources as written in the yaml
    names: tuple = ()
    ids: tuple = ()

    @property
    def num_classes(self):
        return len(self.names)

    def split_sources(self, split):
        """The sources of `split` as written; ValueError naming the yaml when it has no such key."""
        if split not in self.splits:
            have = ", ".join(sorted(self.splits)) or "none"
            raise ValueError(f"{self.path} has no '{split}' split (it has: {have}); add a '{split}:' entry with a "
                             f"folder of images, a .txt list of images or a list of these")
        return self.splits[split]


def read_data_yaml(path):
    """Read and check the data.yaml at `path`; ValueError naming the file, the key and the fix when it is wrong."""
    import yaml  # pyyaml: only the YOLO-txt layout needs it

    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise ValueError(f"data.yaml not found: {path}; give the path of the dataset's data.yaml (data_yaml in the "
                         f"Exp or `data_yaml <path>` on the command line)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a data.yaml: its top level is not a mapping of keys "
                         f"(path, train, val, test, names)")
    missing = [k for k in _REQUIRED if data.get(k) in (None, "", [], {})]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}: a data.yaml needs train and val (image folders or "
                         f".txt lists) and names (a list, or a dict {{id: name}})")
    ids, names = _class_names(data["names"], path)
    _check_nc(data.get("nc"), len(names), path)
    splits = {k: _sources(data[k], k, path) for k in SPLITS if data.get(k) not in (None, "", [])}
    return DataYaml(path=path, root=_dataset_root(data.get("path"), path), splits=splits, names=names, ids=ids)


def _dataset_root(value, yaml_path):
    """`path` of the yaml: absolute as given; relative to the yaml's folder, else to the current directory when only
    that exists; missing: the yaml's folder."""
    yaml_dir = os.path.dirname(yaml_path)
    if value in (None, ""):
        return yaml_dir
    value = os.path.expanduser(str(value))
    if os.path.isabs(value):
        return os.path.normpath(value)
    beside = os.path.normpath(os.path.join(yaml_dir, value))
    here = os.path.abspath(value)
    if not os.path.isdir(beside) and os.path.isdir(here):
        return here
    return beside  # a missing root is reported with the split source that lies under it


def _sources(value, key, yaml_path):
    """A split's sources as a list of strings (a single folder or file becomes a list of one)."""
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if not isinstance(v, (str, os.PathLike)) or not str(v).strip()]
    if bad:
        raise ValueError(f"{yaml_path}: '{key}' has {bad[0]!r}; each source is a folder of images, a .txt list of "
                         f"image paths or an image file, as a string")
    return [str(v).strip() for v in items]


def _class_names(value, yaml_path):
    """(ids, names) in class-index order (sorted ids) from names as a list (ids 0..n-1) or a dict {id: name}."""
    if isinstance(value, (list, tuple)):
        pairs = list(enumerate(value))
    elif isinstance(value, dict):
        pairs = []
        for key, name in value.items():
            try:
                class_id = int(key)
            except (TypeError, ValueError):
                class_id = None
            if class_id is None or class_id < 0 or str(class_id) != str(key).strip():
                raise ValueError(f"{yaml_path}: names has key {key!r}; the keys of names are class ids, whole "
                                 f"numbers >= 0 (names: {{0: cat, 1: dog}})")
            pairs.append((class_id, name))
    else:
        raise ValueError(f"{yaml_path}: names is {value!r}; give a list of class names or a dict {{id: name}}")
    pairs.sort(key=lambda p: p[0])
    ids = tuple(p[0] for p in pairs)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{yaml_path}: names repeats a class id ({', '.join(map(str, ids))}); give each id once")
    empty = [i for i, name in pairs if name is None or not str(name).strip()]
    if empty:
        raise ValueError(f"{yaml_path}: class id {empty[0]} has no name; give every class a name")
    return ids, tuple(str(p[1]) for p in pairs)


def _check_nc(nc, count, yaml_path):
    """nc is optional, but when given it must be the number of names."""
    if nc is None:
        return
    if isinstance(nc, bool) or not isinstance(nc, int) or nc != count:
        raise ValueError(f"{yaml_path}: nc is {nc!r} but names has {count} class(es); set nc: {count} or remove nc "
                         f"(names alone gives the number of classes)")
