#!/usr/bin/env python
"""CPU inference speed: ms per image of the forward pass and the postprocessing for PyTorch eager, PyTorch fused
(channels_last), ONNX Runtime and OpenVINO, batch 1 and 8, beside the official release's PyTorch path.

    python tools/bench_infer.py --official /tmp/official/yolox-0.3.0:/tmp/official_deps --json infer.json
    python tools/bench_infer.py --models yolox-nano:416 --batches 1 --repeats 5

--official takes the folder of an unpacked official release (e.g. `pip download yolox==0.3.0 --no-deps
--no-binary :all:` and untar it), optionally followed by ':' and a folder holding its extra dependency thop.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from yolox.tools.bench_infer import main  # noqa: E402

if __name__ == "__main__":
    main()
