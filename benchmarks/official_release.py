"""Where the benchmarks find the official release they compare with: its source folder, run in a subprocess.

Nothing of the release is copied into this project: the caller gives the folder of an unpacked release (e.g. `pip
download yolox==0.3.0 --no-deps --no-binary :all:`, then untar it), optionally followed by ':' and folders of its
extra dependencies (thop).
"""
import os

__all__ = ["official_release_env", "check_official_package"]


def official_release_env(official):
    """(release folder, environment whose PYTHONPATH starts with it and its dependency folders) for a subprocess.

    official: "release[:deps...]" (os.pathsep-separated). A folder without yolox/__init__.py is named in the error.
    """
    paths = [os.path.abspath(p) for p in str(official).split(os.pathsep) if p]
    if not paths:
        raise FileNotFoundError("--official needs the folder of an unpacked official release")
    official_dir = paths[0]
    if not os.path.isfile(os.path.join(official_dir, "yolox", "__init__.py")):
        raise FileNotFoundError(f"--official {official_dir}: no yolox/__init__.py there; give the folder of an "
                                "unpacked official release (it holds yolox/, exps/ and tools/)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))
    return official_dir, env


def check_official_package(package_file, official_dir):
    """Raise when the subprocess imported yolox from somewhere else than the release (this project, say)."""
    if not os.path.abspath(package_file).startswith(os.path.abspath(official_dir)):
        raise RuntimeError(f"the subprocess imported {package_file}, not the release in {official_dir}")
