"""ONNX and TorchScript export: the exported files run (onnxruntime, torch.jit) and match PyTorch within 1e-4."""
import numpy as np
import pytest
import torch

from model_zoo import perturb_weights
from yolox.tools.export_onnx import run_onnx_cli
from yolox.tools.export_torchscript import run_torchscript_cli
from yolox.utils import CheckpointError

EXP_TEXT = '''
from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.125
        self.num_classes = 3
        self.test_size = (64, 96)
        self.output_dir = {out!r}
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An Exp file for a tiny YOLOX and a checkpoint of it with non-trivial weights and BN statistics."""
    from yolox.exp import get_exp

    tmp = tmp_path_factory.mktemp("export")
    exp_file = tmp / "tiny_exp.py"
    exp_file.write_text(EXP_TEXT.format(out=str(tmp / "out")))
    exp = get_exp(str(exp_file))
    model = perturb_weights(exp.get_model())
    ckpt = tmp / "tiny.pth"
    torch.save({"model": model.state_dict(), "start_epoch": 3}, ckpt)
    return tmp, exp_file, ckpt, model.eval()


def _reference(model, x, decode):
    model.head.decode_in_inference = decode
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("decode", [False, True])
def test_onnx_matches_pytorch(setup, decode):
    import onnxruntime as ort

    tmp, exp_file, ckpt, model = setup
    out = tmp / f"tiny_{decode}.onnx"
    argv = ["-f", str(exp_file), "-c", str(ckpt), "--output-name", str(out), "--dynamic"]
    run_onnx_cli(argv + (["--decode_in_inference"] if decode else []))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 64, 96) * 255  # batch 3 through the dynamic batch axis
    got = session.run(None, {"images": x.numpy()})[0]
    ref = _reference(model, x, decode)
    assert got.shape == ref.shape == (3, 8 * 12 + 4 * 6 + 2 * 3, 5 + 3)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    if not decode:  # raw outputs: boxes still in grid units, far smaller than the decoded pixel values
        assert np.abs(got[..., 2:4]).max() < np.abs(_reference(model, x, True)[..., 2:4]).max()


def test_torchscript_matches_pytorch(setup):
    tmp, exp_file, ckpt, model = setup
    out = tmp / "tiny.torchscript.pt"
    run_torchscript_cli(["-f", str(exp_file), "-c", str(ckpt), "--output-name", str(out), "--batch-size", "2",
                         "--decode_in_inference"])
    loaded = torch.jit.load(str(out))
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        got = loaded(x).numpy()
    np.testing.assert_allclose(got, _reference(model, x, True), rtol=1e-4, atol=1e-4)


def test_class_count_mismatch_is_explained(setup):
    tmp, exp_file, ckpt, _ = setup
    with pytest.raises(CheckpointError, match=r"trained for 3 classes but the Exp has num_classes = 5"):
        run_onnx_cli(["-f", str(exp_file), "-c", str(ckpt), "--output-name", str(tmp / "x.onnx"),
                      "num_classes", "5"])


def test_missing_and_unsafe_checkpoints_are_refused(setup):
    tmp, exp_file, _, model = setup
    with pytest.raises(CheckpointError, match="does not exist"):
        run_torchscript_cli(["-f", str(exp_file), "-c", str(tmp / "nope.pth"), "--output-name", str(tmp / "x.pt")])
    unsafe = tmp / "unsafe.pth"
    torch.save({"model": model.state_dict(), "extra": object.__new__(_Opaque)}, unsafe)
    with pytest.raises(CheckpointError, match="other than tensors"):
        run_torchscript_cli(["-f", str(exp_file), "-c", str(unsafe), "--output-name", str(tmp / "x.pt")])


class _Opaque:
    """A pickled class instance: weights_only loading must refuse it."""
