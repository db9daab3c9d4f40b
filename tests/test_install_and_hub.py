"""A regular (non-editable) install runs the tools as `python -m yolox.tools.*` from any folder; torch.hub entries."""
import importlib.util
import json
import shutil
import site
import subprocess
import sys
import urllib.error
from importlib import metadata
from pathlib import Path

import pytest
import torch

import yolox.models.build as build
from yolox.models import create_yolox_model, yolox_nano

REPO = Path(__file__).resolve().parents[1]


def _copy_sources(dest):
    """The files a source distribution holds: the package, setup.py and the README (no outputs, no datasets)."""
    shutil.copytree(REPO / "yolox", dest / "yolox", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, dest / name)


def _environment_site_dirs():
    """The site-packages folders of this interpreter's environment (a venv's, and its base's when it sees them; the
    user's when it is on), not the other folders on sys.path (the clone, the tests)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if Path(d).is_dir()]


def _can_build_wheels():
    """Whether this environment's setuptools builds wheels: by itself from 70.1 on, before only with `wheel`."""
    try:
        setuptools_version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return setuptools_version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def test_regular_install_runs_the_tools_from_another_folder(tmp_path):
    src, dist, venv, elsewhere = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    _copy_sources(src)
    # The wheel, built offline by this environment's setuptools as `pip install .` builds it (setup.py, its
    # package data); the test extra asks for a setuptools that can (Python 3.11's venvs come with 65.5, which
    # cannot without the `wheel` package)
    assert _can_build_wheels(), "setuptools>=70.1 is needed to build the wheel: pip install -e '.[test]'"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(src)], check=True, cwd=elsewhere)
    (wheel,) = dist.glob("yolox-*.whl")
    # A venv of its own, without pip: yolox goes into it from the wheel, offline. torch & co. come from this
    # interpreter's environment (a venv or not), named in a .pth file: the venv looks there after its own
    # site-packages, and the .pth files there (this environment's editable yolox) are not run
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "environment_under_test.pth").write_text("".join(f"{p}\n" for p in _environment_site_dirs()))
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, cwd=elsewhere)
    shutil.rmtree(src)  # nothing may come from the source tree any more
    # One interpreter of the venv for every check (each new one costs seconds of importing torch): each tool's
    # `python -m yolox.tools.<tool> --help`, run as -m runs it (runpy, as __main__), then where yolox comes from
    tools = ("eval", "train", "demo", "export_onnx", "export_torchscript", "visualize_assign")
    run = subprocess.run([python, "-c", _INSTALLED_CHECKS, *tools], cwd=elsewhere, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["where"].startswith(str(venv)), got["where"]
    for tool, banner in (("eval", "YOLOX Eval"), ("train", "YOLOX train parser"), ("demo", "YOLOX Demo"),
                         ("export_onnx", "YOLOX onnx deploy"), ("export_torchscript", "YOLOX torchscript deploy"),
                         ("visualize_assign", "assignment")):
        code, stdout, stderr = got["help"][tool]
        assert code in (0, None), (tool, stderr)
        assert banner in stdout and "-f" in stdout, (tool, stdout)
    # the published Exps come with the package: -n works without a clone
    assert got["yolox_s_depth"] == 0.33


_INSTALLED_CHECKS = """
import contextlib, io, json, runpy, sys
tools, results = sys.argv[1:], {}
for tool in tools:
    out, err, code = io.StringIO(), io.StringIO(), None
    sys.argv = [tool, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(f"yolox.tools.{tool}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    results[tool] = [code, out.getvalue(), err.getvalue()]
import yolox.tools.train, yolox
from yolox.exp import get_exp
print(json.dumps({"help": results, "where": yolox.__file__, "yolox_s_depth": get_exp(exp_name="yolox-s").depth}))
"""


def test_tools_in_the_clone_launch_the_package_modules():
    for tool in ("train", "eval", "demo", "export_onnx", "export_torchscript", "visualize_assign"):
        text = (REPO / "tools" / f"{tool}.py").read_text()
        assert f"from yolox.tools.{tool} import main" in text


def test_torch_hub_local_load_without_weights():
    model = torch.hub.load(str(REPO), "yolox_nano", source="local", pretrained=False, num_classes=3)
    assert model.head.cls_preds[0].out_channels == 3
    assert sum(p.numel() for p in model.parameters()) > 800_000
    assert next(model.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_hubconf_names_the_official_entries():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hubconf_under_test", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    for name in ("yolox_nano", "yolox_tiny", "yolox_s", "yolox_m", "yolox_l", "yolox_x", "yolov3", "yolox_custom"):
        assert callable(getattr(hub, name))


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """torch.hub's folder in tmp_path and no network: downloads fail as they do offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "hub" / "checkpoints"


def test_pretrained_offline_with_empty_cache_names_the_file_and_folder(empty_hub_cache):
    with pytest.raises(build.PretrainedWeightsUnavailable) as info:
        yolox_nano(pretrained=True)
    message = str(info.value)
    assert "\n" not in message
    assert "yolox_nano.pth" in message and str(empty_hub_cache) in message
    assert "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.pth" in message


def test_pretrained_uses_the_file_in_the_cache(empty_hub_cache):
    reference = create_yolox_model("yolox-nano", pretrained=False, device="cpu")
    empty_hub_cache.mkdir(parents=True)
    torch.save({"model": reference.state_dict()}, empty_hub_cache / "yolox_nano.pth")
    model = yolox_nano(pretrained=True, device="cpu")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # another class count: everything but the class predictions comes from the checkpoint (the official would
    # silently return random weights)
    three = yolox_nano(pretrained=True, num_classes=3, device="cpu")
    assert torch.equal(three.backbone.backbone.stem.conv.conv.weight, reference.backbone.backbone.stem.conv.conv.weight)
    assert three.head.cls_preds[0].out_channels == 3


def test_yolox_custom_loads_the_exp_and_checkpoint(tmp_path):
    exp_file = REPO / "exps" / "example" / "forest" / "yolox_nano_forest.py"
    source = create_yolox_model("yolox_custom", exp_path=str(exp_file), device="cpu")
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt.pth")
    model = torch.hub.load(str(REPO), "yolox_custom", source="local", ckpt_path=str(tmp_path / "ckpt.pth"),
                           exp_path=str(exp_file), device="cpu")
    assert model.head.cls_preds[0].out_channels == 1
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="exp_path"):
        create_yolox_model("yolox_custom")
    with pytest.raises(ValueError, match="yolox-nano"):
        create_yolox_model("yolox-q")
