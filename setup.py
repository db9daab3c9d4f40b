#!/usr/bin/env python
"""Install the pure-PyTorch YOLOX training framework as the package `yolox`."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "yolox" / "__init__.py").read_text()).group(1)

setup(
    name="yolox",
    version=VERSION,
    description="A pure-PyTorch YOLOX training framework: the official detector, commands and checkpoints, faster.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "exps", "benchmarks", "benchmarks.*")),
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.23",
        "opencv-python-headless>=4.7",
        "loguru>=0.7",
        "tabulate>=0.9",
        "pycocotools>=2.0.6",
        "tqdm>=4.64",
        "pyyaml>=5.4",
    ],
    extras_require={
        # the tests also cover the training curve (matplotlib) and the tensorboard scalars
        "test": ["pytest>=7", "hypothesis>=6.80", "matplotlib>=3.5", "tensorboard>=2.12",
                 # tests/test_install_and_hub.py builds a wheel offline with this setuptools: bdist_wheel is in
                 # setuptools from 70.1 on (a Python 3.11 venv comes with 65.5, which cannot)
                 "setuptools>=70.1"],
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        # yolox.deploy: run exported models on the CPU; nncf: export_openvino --int8 (2.9 is the release that goes
        # with OpenVINO 2024.0; the quantize API used here, ignored scopes by name included, dates from 2.5)
        "deploy": ["onnxruntime>=1.16", "openvino>=2024.0", "nncf>=2.9"],
        "tensorboard": ["tensorboard>=2.12"],
        "plot": ["matplotlib>=3.5"],  # the training curve PNG at the end of training
        "wandb": ["wandb>=0.15"],  # -l wandb
        "mlflow": ["mlflow>=2.0"],  # -l mlflow (mlflow-skinny is enough)
    },
    classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: Apache Software License"],
)
