"""The published model sizes: state-dict layout, parameter counts, forward shapes, losses and backward."""
import pytest
import torch

from model_zoo import SIZES, build, reference_layouts

PUBLISHED_PARAMS = {
    "yolox-nano": 912_159, "yolox-tiny": 5_055_855, "yolox-s": 8_968_255, "yolox-m": 25_326_495,
    "yolox-l": 54_208_895, "yolox-x": 99_071_455, "yolov3": 63_724_767,
}
LAYOUTS = reference_layouts()


@pytest.mark.parametrize("name", list(SIZES))
def test_parameter_count_and_state_dict_layout(name):
    with torch.device("meta"):  # structure, counts and shapes without allocating and initialising the big models
        model = build(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]
    if LAYOUTS is None:
        pytest.skip("official_state_dict_layout.txt not found next to the checkout")
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == LAYOUTS[name]["names"]


@pytest.mark.parametrize("name", ["yolox-nano", "yolox-s", "yolov3"])
def test_published_style_checkpoint_loads_strict(name):
    """A checkpoint laid out like the published yolox_*.pth ({"model": state_dict}) loads with strict=True."""
    if LAYOUTS is None:
        pytest.skip("official_state_dict_layout.txt not found next to the checkpoint")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in LAYOUTS[name]["names"]:
        state[key] = (torch.tensor(7) if key.endswith("num_batches_tracked")
                      else torch.randn(shape, generator=gen))
    ckpt = {"model": state, "start_epoch": 300}
    model = build(name)
    model.load_state_dict(ckpt["model"], strict=True)
    assert torch.equal(model.state_dict()[LAYOUTS[name]["names"][0][0]], state[LAYOUTS[name]["names"][0][0]])


def _labels(batch, size, counts, num_classes=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, max(max(counts), 1), 5)
    for b, n in enumerate(counts):
        for i in range(n):
            cx, cy = (torch.rand(2, generator=gen) * size).tolist()
            w, h = (torch.rand(2, generator=gen) * size / 2 + 4).tolist()
            labels[b, i] = torch.tensor([i % num_classes, cx, cy, w, h])
    return labels


def _train_step(name, size=64):
    torch.manual_seed(0)
    model = build(name)
    model.train()
    imgs = torch.randn(2, 3, size, size)
    out = model(imgs, _labels(2, size, [3, 0]))
    assert set(out) == {"total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss", "num_fg"}
    for key, value in out.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), key
    assert out["conf_loss"] > 0 and out["iou_loss"] > 0 and out["num_fg"] > 0
    out["total_loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.head.cls_preds[0].weight.grad.abs().sum() > 0


# yolox-m, -l and -x (25-99 M parameters) under -m slow: the same YOLOPAFPN and YOLOXHead code as yolox-tiny and
# yolox-s (only the depth and width multipliers differ), whose training steps run by default; their structure and
# parameter counts are checked by default too (test_parameter_count_and_state_dict_layout)
_BIG = ("yolox-m", "yolox-l", "yolox-x")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _BIG else n for n in SIZES])
def test_losses_finite_and_backward(name):
    _train_step(name)


@pytest.mark.parametrize("name", ["yolox-nano", "yolov3"])
def test_eval_output_is_decoded(name):
    model = build(name, num_classes=3).eval()
    size = 96
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    assert out.shape == (2, anchors, 5 + 3)
    assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()  # objectness and class scores after sigmoid
    assert (out[..., 2:4] > 0).all()
    # the first anchor (stride 8, cell 0, 0) decodes around the top-left corner; the last one near the bottom right
    assert out[0, 0, 0].abs() < 8 * 4 and out[0, -1, 0] > size / 2
    model.head.decode_in_inference = False
    with torch.no_grad():
        raw = model(torch.randn(1, 3, size, size))
    assert raw.shape == (1, anchors, 8)


def test_head_bias_prior_and_bn_settings():
    model = build("yolox-s", num_classes=4)
    assert torch.allclose(model.head.cls_preds[0].bias.sigmoid(), torch.full((4,), 0.01))
    assert torch.allclose(model.head.obj_preds[2].bias.sigmoid(), torch.full((1,), 0.01))
    bn = model.backbone.backbone.stem.conv.bn
    assert bn.eps == 1e-3 and bn.momentum == 0.03


def test_l1_loss_switch():
    torch.manual_seed(0)
    model = build("yolox-nano", num_classes=2).train()
    imgs, labels = torch.randn(1, 3, 64, 64), _labels(1, 64, [2], num_classes=2)
    assert model(imgs, labels)["l1_loss"] == 0
    model.head.use_l1 = True
    out = model(imgs, labels)
    assert out["l1_loss"] > 0
    assert torch.isclose(out["total_loss"], out["iou_loss"] + out["conf_loss"] + out["cls_loss"] + out["l1_loss"])


def test_train_mode_without_targets_is_a_clear_error():
    model = build("yolox-nano").train()
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.randn(1, 3, 64, 64))


def test_bfloat16_outputs_are_decoded_in_float32_for_the_losses():
    """--fp16 on a CPU gives the head bfloat16 outputs; decoded in bfloat16 a box centre would be rounded to a grid of
    2 pixels at input 352, so the losses (and SimOTA) take them in float32: the same losses as float32 outputs of equal
    value."""
    torch.manual_seed(0)
    head = build("yolox-nano", num_classes=1).head.train()
    head.use_l1 = True
    shapes = [(44, 44, 8), (22, 22, 16), (11, 11, 32)]
    grid = head.anchor_grid(shapes, torch.device("cpu"))
    A = sum(h * w for h, w, _ in shapes)
    reg = torch.cat([torch.rand(2, A, 2), torch.log(28.0 / grid.strides).view(1, A, 1).expand(2, A, 2)
                     + 0.2 * torch.randn(2, A, 2)], -1).to(torch.bfloat16)  # (2, A, 4) values bfloat16 can hold
    obj, cls = torch.randn(2, A).to(torch.bfloat16), torch.randn(2, A, 1).to(torch.bfloat16)
    labels = torch.zeros(2, 8, 5)
    labels[:, :, 1:3] = torch.rand(2, 8, 2) * 300 + 26  # centres across the 352 image, crowns of 20-36 pixels
    labels[:, :, 3:5] = torch.rand(2, 8, 2) * 16 + 20
    low = head.get_losses_split(reg, obj, cls, labels, grid)
    full = head.get_losses_split(reg.float(), obj.float(), cls.float(), labels, grid)
    for a, b in zip(low, full):
        assert torch.as_tensor(a).dtype == torch.as_tensor(b).dtype
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-6, atol=1e-7)


def test_gather_positives_puts_the_positives_first_then_filler_rows():
    from yolox.models.yolo_head import gather_positives

    fg = torch.tensor([[False, True, False, True], [True, False, False, False]])  # (B, A) = (2, 4): 3 positives
    pos = gather_positives(fg, 5)  # a bound of 5 rows, known on the host
    assert pos.index.tolist()[:3] == [1, 3, 4] and pos.real.tolist() == [True, True, True, False, False]
    assert pos.image.tolist()[:3] == [0, 0, 1] and pos.anchor.tolist()[:3] == [1, 3, 0]
    assert not fg.reshape(-1)[pos.index[3:]].any()  # the filler rows are negatives
    assert gather_positives(fg, 8).index.sort().values.tolist() == list(range(8))  # each anchor at most once
