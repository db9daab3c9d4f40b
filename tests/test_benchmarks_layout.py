"""The benchmarks and oracles live outside the package: yolox never imports them, and the commands run from anywhere."""
import argparse
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.arguments import model_sizes

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("bench_assign", "bench_data", "bench_train", "bench_infer", "bench_chaos", "bench_deploy")


def _imported_modules(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_yolox_imports_neither_benchmarks_nor_tests():
    found = [(str(p.relative_to(REPO)), m) for p in sorted((REPO / "yolox").rglob("*.py"))
             for m in _imported_modules(p) if m.split(".")[0] in ("benchmarks", "tests")]
    assert not found, found


def test_benchmark_code_is_gone_from_the_package():
    assert importlib.util.find_spec("yolox.tools.bench_infer") is None
    import yolox.data
    import yolox.tools.cli

    assert not hasattr(yolox.data, "DirectMosaicDetection")
    assert not hasattr(yolox.tools.cli, "model_sizes")


def test_tools_launch_the_benchmark_commands():
    for name in COMMANDS:
        text = (REPO / "tools" / f"{name}.py").read_text()
        assert f"from benchmarks.{name} import main" in text, name
        assert (REPO / "benchmarks" / f"{name}.py").is_file()


@pytest.mark.parametrize("script", ["benchmarks/bench_assign.py", "tools/bench_data.py"])
def test_commands_run_from_another_folder(script, tmp_path):
    run = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "usage:" in run.stdout and "--json" in run.stdout


def test_model_sizes_parses_name_size_pairs():
    assert model_sizes("yolox-nano:416, yolox-s:640") == (("yolox-nano", 416), ("yolox-s", 640))
    with pytest.raises(argparse.ArgumentTypeError, match="'yolox-s': expected name:size"):
        model_sizes("yolox-s")
