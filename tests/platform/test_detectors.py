"""Faster R-CNN and FCOS: the detection calling convention (losses in training, detections and
losses in eval, empty images), that a short overfit finds the boxes, a state dict with each
tensor once, backbone transfer, the yamls, and the torchvision internals they rely on."""

import pytest
import torch
import yaml
from torchvision.ops import box_iou

from paralab.platform.config import config_dir, validate_section
from paralab.platform.models import MODELS, Backbone, InputSpec
from paralab.platform.models.dense import dense_backbones
from paralab.platform.models.detection import torchvision_compat
from paralab.platform.models.transfer import load_backbone

DETECTORS = ["faster_rcnn", "fcos"]
BACKBONE = {"name": "cnn", "channels": [8, 16, 32]}
SPEC = InputSpec(1, (32, 32), 3)


def build(name: str, spec: InputSpec = SPEC, **options) -> torch.nn.Module:
    entry = MODELS.get(name)
    values = {"name": name, "backbone": BACKBONE, "feature_levels": 2, **options}
    return entry.obj(validate_section("model", values, entry.config), spec)


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


EMPTY = target([], [])


def check_detections(detections, count: int, spec: InputSpec = SPEC) -> None:
    assert isinstance(detections, list) and len(detections) == count
    h, w = spec.image_size
    for d in detections:
        assert set(d) == {"boxes", "scores", "labels"}
        n = len(d["scores"])
        assert d["boxes"].shape == (n, 4) and d["boxes"].dtype == torch.float32
        assert d["scores"].dtype == torch.float32 and d["labels"].dtype == torch.long
        assert d["labels"].shape == (n,)
        if n:
            boxes = d["boxes"]
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
            assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            assert (boxes[:, 2:] >= boxes[:, :2]).all()
            assert d["labels"].min() >= 0 and d["labels"].max() < spec.num_classes
            assert ((d["scores"] >= 0) & (d["scores"] <= 1)).all()


def check_losses(losses: dict) -> None:
    assert losses and all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses


def test_the_torchvision_internals_the_detectors_rely_on_are_still_there():
    found = torchvision_compat.problems()
    assert not found, (
        "torchvision moved something paralab's detectors rely on (see the docstring of "
        "paralab.platform.models.detection.torchvision_compat):\n" + "\n".join(found)
    )


def test_the_compat_check_reports_a_moved_internal(monkeypatch):
    from torchvision.models.detection.roi_heads import RoIHeads

    monkeypatch.setattr(RoIHeads, "forward", lambda self, features, boxes, sizes: None)
    found = torchvision_compat.problems()
    assert any("RoIHeads.forward" in p and "expected" in p for p in found), found


def test_both_are_registered_for_detection_and_their_yamls_list_every_option():
    for name in DETECTORS:
        entry = MODELS.get(name)
        assert entry.meta.get("task") == "detection" and entry.description
        values = yaml.safe_load((config_dir() / "model" / f"{name}.yaml").read_text())
        assert values["backbone"] == {"name": "cnn"}
        cfg = validate_section("model", values, entry.config)
        assert set(values) == set(vars(entry.config())), name
        assert vars(cfg) == vars(entry.config()), name  # the yaml's values are the defaults


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("channels", [1, 3])
def test_training_gives_losses_and_eval_gives_detections(name, channels):
    torch.manual_seed(0)
    spec = InputSpec(channels, (32, 32), 3)
    model = build(name, spec)
    images = torch.randn(3, channels, 32, 32)
    targets = [
        target([[2, 3, 18, 20]], [2]),
        target([[5, 5, 25, 30], [0, 0, 12, 9]], [0, 1]),
        EMPTY,
    ]

    out = model.train()(images, targets)
    assert out.detections is None
    check_losses(out.losses)
    sum(out.losses.values()).backward()
    assert next(model.backbone.parameters()).grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs targets"):
        model(images)

    model.eval()
    rng = torch.get_rng_state()
    with torch.no_grad():
        plain, with_targets = model(images), model(images, targets)
    assert torch.equal(rng, torch.get_rng_state())  # validation leaves the run's stream alone
    assert plain.losses == {}
    check_detections(plain.detections, 3, spec)
    check_detections(with_targets.detections, 3, spec)
    assert with_targets.losses.keys() == out.losses.keys()
    check_losses(with_targets.losses)
    assert not model.training and all(not m.training for m in model.modules())
    for a, b in zip(plain.detections, with_targets.detections, strict=True):  # same features
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


@pytest.mark.parametrize("name", DETECTORS)
def test_images_without_boxes_work_in_both_modes(name):
    torch.manual_seed(0)
    model = build(name)
    images = torch.randn(2, 1, 32, 32)
    out = model.train()(images, [EMPTY, EMPTY])
    check_losses(out.losses)
    sum(out.losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images, [EMPTY, EMPTY])
    check_losses(out.losses)
    check_detections(out.detections, 2)


def overfit_data() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Four images holding one or two filled rectangles; the class sets the brightness."""
    layout = [
        ([[3, 4, 17, 18]], [0]),
        ([[12, 10, 28, 24]], [1]),
        ([[2, 2, 14, 13], [17, 16, 30, 30]], [2, 0]),
        ([[6, 15, 22, 29], [18, 2, 30, 12]], [1, 2]),
    ]
    images = torch.full((4, 1, 32, 32), -1.0)
    for i, (boxes, labels) in enumerate(layout):
        for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
            images[i, 0, y0:y1, x0:x1] = 0.0 + label
    return images, [target(b, c) for b, c in layout]


@pytest.mark.parametrize(("name", "steps"), [("faster_rcnn", 100), ("fcos", 100)])
def test_a_short_overfit_finds_every_box_with_its_class(name, steps):
    torch.manual_seed(0)
    model = build(name)
    images, targets = overfit_data()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        sum(model(images, targets).losses.values()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        detections = model(images).detections
    for i, (found, truth) in enumerate(zip(detections, targets, strict=True)):
        n = len(truth["labels"])
        top = slice(0, n)  # the n best detections are the n objects, each with its class
        iou = box_iou(truth["boxes"], found["boxes"][top])
        assert iou.shape[1] == n, (i, found)
        best = iou.max(dim=1)
        assert (best.values > 0.5).all(), (i, iou, found["boxes"][top])
        assert torch.equal(found["labels"][top][best.indices], truth["labels"]), (i, found)


@pytest.mark.parametrize("name", DETECTORS)
def test_each_tensor_is_in_the_state_dict_once_and_the_backbone_transfers(name, tmp_path):
    model = build(name)
    state = model.state_dict()
    pointers = [v.data_ptr() for v in state.values() if v.numel()]
    assert len(pointers) == len(set(pointers))
    assert any(k.startswith("backbone.") and k.endswith("running_mean") for k in state)
    assert any(k.startswith("fpn.") for k in state)
    assert isinstance(model.backbone, Backbone)
    assert model.feature_info[0]["module"].startswith("backbone.")

    torch.manual_seed(1)
    entry = MODELS.get("cnn")
    classifier = entry.obj(validate_section("model", BACKBONE, entry.config), SPEC)
    with torch.no_grad():
        for p in classifier.parameters():
            p.add_(torch.randn_like(p))
    torch.save({"model": classifier.state_dict()}, tmp_path / "cnn.pt")
    assert load_backbone(model, tmp_path / "cnn.pt") == len(classifier.backbone.state_dict())
    theirs = classifier.backbone.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.backbone.state_dict().items())


SMALL_BACKBONES = {
    "cnn": {"channels": [8, 16, 32, 32]},
    "resnet18": {},
    "vit": {"dim": 16, "depth": 2, "heads": 2, "patch_size": 4},
    "fedavg_cnn": {"hidden": 32},
}


@pytest.mark.parametrize("backbone", dense_backbones(3))
@pytest.mark.parametrize(
    "name", [e.name for e in MODELS.entries() if e.meta["task"] == "detection"]
)
def test_every_detector_trains_on_every_backbone_with_feature_maps(name, backbone):
    """A ViT or fedavg_cnn has one stride-2+ scale: a one-level pyramid."""
    spec = InputSpec(3, (32, 32), 3)
    levels = 2 if backbone in ("cnn", "resnet18") else 1
    values = {"name": backbone, **SMALL_BACKBONES[backbone]}
    model = build(name, spec, backbone=values, feature_levels=levels)
    targets = [target([[4, 4, 20, 24]], [1]), target([], [])]
    torch.manual_seed(0)
    losses = model(torch.randn(2, 3, 32, 32), targets).losses
    check_losses(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        check_detections(model(torch.randn(2, 3, 32, 32)).detections, 2, spec)
