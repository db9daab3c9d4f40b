"""Conv+BN fusion, parameter/FLOP counts (on the meta device) and freezing, on handmade modules and the real models."""
import copy

import pytest
import torch
import torch.nn as nn

from yolox.utils import (
    adjust_status,
    freeze_module,
    fuse_conv_and_bn,
    fuse_model,
    get_model_flops,
    get_model_info,
    get_model_params,
    profile_model,
    replace_module,
)


class TinyConvBN(nn.Module):
    """BaseConv's structure: conv -> bn -> act, with fuseforward = act(conv(x))."""

    def __init__(self, cin, cout, k=3, stride=1, groups=1, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuseforward(self, x):
        return self.act(self.conv(x))


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


@pytest.mark.parametrize("groups,bias", [(1, False), (1, True), (4, False)])
def test_fuse_conv_and_bn_matches_eval_bn(groups, bias):
    torch.manual_seed(0)
    block = TinyConvBN(8, 12, k=3, stride=2, groups=groups, bias=bias)
    _randomise_bn(block)
    block.eval()
    x = torch.randn(2, 8, 9, 11)
    fused = fuse_conv_and_bn(block.conv, block.bn)
    assert fused.bias is not None and not fused.weight.requires_grad
    assert fused.stride == (2, 2) and fused.groups == groups
    assert torch.allclose(fused(x), block.bn(block.conv(x)), atol=1e-5)


def test_fuse_model_on_handmade_network():
    torch.manual_seed(0)
    model = nn.Sequential(TinyConvBN(3, 8), nn.Sequential(TinyConvBN(8, 8, groups=8), TinyConvBN(8, 4, k=1)))
    _randomise_bn(model)
    model.eval()
    x = torch.randn(1, 3, 16, 16)
    expected = model(x)
    fused = fuse_model(model)
    assert fused is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), expected, atol=1e-4)
    # a fused model still deep-copies and counts (the forward attribute is a bound method)
    assert get_model_flops(model, (16, 16)) > 0


def test_params_and_flops_of_known_layers():
    conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    assert get_model_params(conv) == 16 * 3 * 9
    # 2 FLOPs per multiply-accumulate: 2 * Cout * H * W * Cin * k * k
    assert get_model_flops(conv, (32, 48)) * 1e9 == pytest.approx(2 * 16 * 32 * 48 * 3 * 9)
    block = nn.Sequential(conv, nn.BatchNorm2d(16))
    # plus 4 per BatchNorm output element, as the official (thop x 2) count
    assert get_model_flops(block, (32, 48)) * 1e9 == pytest.approx(2 * 16 * 32 * 48 * 27 + 4 * 16 * 32 * 48)
    assert get_model_info(block, (32, 48)) == "Params: {:.2f}M, Gflops: {:.2f}".format(
        (16 * 27 + 32) / 1e6, get_model_flops(block, (32, 48))
    )


class MakesCpuTensors(nn.Module):
    """A forward that cannot run on meta tensors (it mixes in a CPU tensor built from data)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        scale = torch.tensor(float(y.abs().sum() > -1))  # needs real values
        return y * scale


def test_flops_fall_back_to_real_device_when_meta_fails():
    model = MakesCpuTensors()
    assert get_model_flops(model, (8, 8)) * 1e9 == pytest.approx(2 * 4 * 8 * 8 * 3)
    assert model.conv.weight.device.type == "cpu"  # the original model is untouched


def test_profile_model_restores_mode_and_reports():
    model = nn.Sequential(TinyConvBN(3, 4), TinyConvBN(4, 2, k=1)).train()
    stats = profile_model(model, (16, 24), runs=2, warmup=1)
    assert model.training and all(m.training for m in model.modules())
    assert stats["output_shape"] == (1, 2, 16, 24)
    assert stats["params"] == get_model_params(model)
    assert stats["forward_ms"] > 0 and stats["gflops"] > 0


def test_freeze_module_by_name_and_whole():
    model = nn.Sequential()
    model.add_module("backbone", TinyConvBN(3, 4))
    model.add_module("head", TinyConvBN(4, 2))
    model.train()
    freeze_module(model, name="backbone")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not model.backbone.bn.training and model.head.bn.training
    freeze_module(model)
    assert not any(p.requires_grad for p in model.parameters())


def test_replace_module_and_adjust_status():
    model = nn.Sequential(TinyConvBN(3, 4), nn.Sequential(TinyConvBN(4, 4)))
    replace_module(model, nn.SiLU, nn.ReLU)
    acts = [m for m in model.modules() if isinstance(m, (nn.SiLU, nn.ReLU))]
    assert len(acts) == 2 and all(isinstance(m, nn.ReLU) for m in acts)
    assert isinstance(replace_module(nn.SiLU(), nn.SiLU, nn.Identity), nn.Identity)

    model.train()
    model[1].eval()
    with adjust_status(model, training=False):
        assert not any(m.training for m in model.modules())
    assert model.training and not model[1].training and not model[1][0].training


# ---------------------------------------------------------------- with the real models (yolox.models)

PUBLISHED_GFLOPS = {
    "yolox-nano": 1.08,
    "yolox-tiny": 6.45,
    "yolox-s": 26.8,
    "yolox-m": 73.8,
    "yolox-l": 155.6,
    "yolox-x": 281.9,
}


def _meta_model(name):
    """The published model built on the meta device: real structure, no memory, no initialisation cost."""
    from yolox.exp import get_exp

    with torch.device("meta"):
        return get_exp(None, name).get_model()


@pytest.mark.parametrize("name", list(PUBLISHED_GFLOPS))
def test_gflops_close_to_published(name):
    from yolox.exp import get_exp

    size = get_exp(None, name).test_size
    gflops = get_model_flops(_meta_model(name), size)
    assert gflops == pytest.approx(PUBLISHED_GFLOPS[name], rel=2e-3)


@pytest.mark.parametrize("name", ["yolox-nano", "yolox-s", "yolov3"])
def test_fuse_model_keeps_outputs_of_real_models(name):
    from yolox.exp import get_exp

    torch.manual_seed(0)
    model = get_exp(None, name).get_model()
    _randomise_bn(model)
    model.eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model(x)
        fused = fuse_model(copy.deepcopy(model))
        got = fused(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert got.shape == expected.shape
    # boxes are in pixels (exp of a raw output times the stride): compare relative to their magnitude
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


# ---------------------------------------------------------------- the model-info table (tools/model_info.py)


def _load_tool():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "model_info.py")
    spec = importlib.util.spec_from_file_location("model_info_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_describe_models_and_tool_json(capsys):
    import json

    from yolox.exp.model_info import describe_models, format_model_table

    rows = describe_models(["yolox_nano"], runs=1, warmup=0)
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == "yolox-nano" and row["input_size"] == (416, 416)
    assert row["params"] == 912159 and row["gflops"] == pytest.approx(1.08, abs=0.006)
    assert row["output_shape"] == (1, 3549, 85)  # (52^2 + 26^2 + 13^2) anchors, 4 + 1 + 80 channels
    table = format_model_table(rows)
    assert "yolox-nano" in table and "912,159" in table and "416x416" in table

    tool = _load_tool()
    assert tool.main(["-n", "yolox-nano", "--json", "--warmup", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["model"] == "yolox-nano" and printed[0]["output_shape"] == [1, 3549, 85]
    with pytest.raises(SystemExit):
        tool.main(["-n", "yolox-q"])
    assert "valid names" in capsys.readouterr().err


@pytest.mark.slow
def test_describe_every_published_model():
    from yolox.exp.model_info import describe_models

    rows = describe_models(runs=1, warmup=0)
    assert [r["model"] for r in rows] == list(PUBLISHED_GFLOPS) + ["yolov3"]
    for r in rows:
        anchors = sum((r["input_size"][0] // s) * (r["input_size"][1] // s) for s in (8, 16, 32))
        assert r["output_shape"] == (1, anchors, 85)
