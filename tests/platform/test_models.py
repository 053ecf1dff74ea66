"""Contract tests over every registered model: a new model is tested the moment it exists."""

import math

import pytest
import torch

from paralab.platform.config import validate_section
from paralab.platform.models import MODELS, Classifier, InputSpec

# Classifiers only: dense (segmentation) models have their own contract tests
# (tests/platform/test_segmentation_models.py).
CLASSIFIERS = [
    e.name for e in MODELS.entries() if e.meta.get("task", "classification") == "classification"
]
SPECS = [InputSpec(1, (8, 8), 10), InputSpec(3, (32, 32), 7)]


# Registry models with their defaults, plus settings that change the stage ladder: the standard
# ResNet stem (strides from 2), a cnn and a fedavg_cnn deeper than 8 px can halve, ViT with 2 px
# patches, and a deeper mlp with dropout.
VARIANTS = [(name, {}) for name in CLASSIFIERS] + [
    ("resnet18", {"small_input_stem": False}),
    ("cnn", {"channels": [4, 4, 4, 4, 4], "convs_per_stage": 2}),
    ("fedavg_cnn", {"channels": [4, 4, 4, 4], "hidden": 8}),
    ("vit", {"patch_size": 2, "dim": 16, "depth": 2, "heads": 2}),
    ("mlp", {"hidden": [8, 8, 8], "dropout": 0.5}),
]


def build(name: str, spec: InputSpec, **settings) -> Classifier:
    entry = MODELS.get(name)
    return entry.obj(validate_section("model", {"name": name, **settings}, entry.config), spec)


@pytest.mark.parametrize("spec", SPECS, ids=["1x8x8", "3x32x32"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_backward_and_features(name, spec):
    torch.manual_seed(0)
    model = build(name, spec)
    x = torch.randn(4, spec.in_channels, *spec.image_size)
    features = model.forward_features(x)
    assert features.shape == (4, model.num_features)
    logits = model(x)
    assert logits.shape == (4, spec.num_classes)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(4) % spec.num_classes)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_reset_head_changes_outputs_and_keeps_the_backbone(name):
    spec = SPECS[0]
    model = build(name, spec).eval()
    x = torch.randn(2, spec.in_channels, *spec.image_size)
    before = model.forward_features(x)
    model.reset_head(3)
    assert model(x).shape == (2, 3)
    assert torch.allclose(model.forward_features(x), before)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_a_backbone_moves_to_a_model_with_other_classes(name):
    """A trained backbone's state dict loads, key for key, into a model built for another task."""
    spec, other = SPECS[0], InputSpec(SPECS[0].in_channels, SPECS[0].image_size, 3)
    trained, fresh = build(name, spec).eval(), build(name, other).eval()
    assert trained.backbone.state_dict().keys() == fresh.backbone.state_dict().keys()
    trained.reset_head(3)
    fresh.load_state_dict(trained.state_dict())  # strict: backbone and the reset head
    x = torch.randn(2, spec.in_channels, *spec.image_size)
    assert torch.equal(fresh.forward_features(x), trained.forward_features(x))
    assert torch.equal(fresh(x), trained(x))


@pytest.mark.parametrize("spec", SPECS, ids=["1x8x8", "3x32x32"])
@pytest.mark.parametrize(
    ("name", "settings"), VARIANTS, ids=["-".join([n, *s]) for n, s in VARIANTS]
)
def test_intermediates_match_feature_info(name, settings, spec):
    """``feature_info`` alone says what ``forward_intermediates`` returns, so a U-Net or FCN
    decoder can be built before any image is seen; an intermediate map trains the backbone."""
    torch.manual_seed(0)
    model = build(name, spec, **settings)
    info = model.feature_info
    assert info and all(i["num_chs"] > 0 and i["reduction"] >= 1 for i in info)
    assert [i["reduction"] for i in info] == sorted(i["reduction"] for i in info)
    assert all(isinstance(model.get_submodule(i["module"]), torch.nn.Module) for i in info)
    x = torch.randn(2, spec.in_channels, *spec.image_size)
    maps = model.forward_intermediates(x)
    assert len(maps) == len(info)
    for fmap, stage in zip(maps, info, strict=True):
        n, c, *size = fmap.shape
        assert (n, c) == (2, stage["num_chs"])
        for got, full in zip(size, spec.image_size, strict=True):
            assert got in {full // stage["reduction"], math.ceil(full / stage["reduction"])}

    model.eval()  # no dropout, so the picked maps equal the same stages of all maps
    everything, last = model.forward_intermediates(x), len(info) - 1
    picks = [(1, [last]), (2, [last - 1, last]), ([0, -1], [0, last]), ([-1, 0, 0], [0, last])]
    for indices, stages in picks:
        picked = model.forward_intermediates(x, indices)
        assert len(picked) == len(stages)
        assert all(torch.equal(p, everything[i]) for p, i in zip(picked, stages, strict=True))
    for bad in (0, len(info) + 1, [len(info)], [-len(info) - 1], []):
        with pytest.raises(ValueError):
            model.forward_intermediates(x, bad)

    model.train().zero_grad()
    model.forward_intermediates(x, 1)[0].square().mean().backward()
    missing = {n for n, p in model.named_parameters() if p.grad is None}
    # Only the head and a ViT's final norm (the class-token path) are past the last stage.
    assert missing <= {"head.weight", "head.bias", "backbone.norm.weight", "backbone.norm.bias"}
    assert "head.weight" in missing
    first = next(model.backbone.parameters())
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_model_documents_itself(name):
    assert MODELS.get(name).description


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_channels_last_changes_the_layout_not_the_model(name):
    """``trainer.channels_last`` (on by default) makes conv weights NHWC; outputs, intermediate
    maps and the state dict a checkpoint or a federated client exchanges stay the same."""
    from paralab.api import compose
    from paralab.platform.runner import build_model

    spec = SPECS[1]
    models = {}
    for flag in (False, True):
        torch.manual_seed(0)
        config = compose("quickstart_offline", [f"model={name}", f"trainer.channels_last={flag}"])
        models[flag] = build_model(config, spec).eval()
    convs = [p for p in models[True].parameters() if p.dim() == 4]  # none in an mlp
    assert bool(convs) == any(isinstance(m, torch.nn.Conv2d) for m in models[True].modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not models[False].state_dict().keys() ^ models[True].state_dict().keys()
    x = torch.randn(3, spec.in_channels, *spec.image_size)
    assert torch.allclose(models[False](x), models[True](x), atol=1e-5)
    maps = [models[flag].forward_intermediates(x) for flag in (False, True)]
    assert len(maps[0]) == len(maps[1]) == len(models[True].feature_info)
    for a, b in zip(*maps, strict=True):  # unnormalised maps reach ~10: float32 reassociation
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    models[False].load_state_dict(models[True].state_dict())


# The papers' models on their papers' input, pinned to the papers' parameter counts, so that an
# architecture drift fails here.
MNIST, CIFAR10 = InputSpec(1, (28, 28), 10), InputSpec(3, (32, 32), 10)
PAPER_MODELS = [
    ("mlp", {}, MNIST, 478_410),  # van de Ven & Tolias (2019): 784-400-400-10
    ("mlp", {"hidden": [200, 200]}, MNIST, 199_210),  # McMahan et al. (2017)'s 2NN
    ("fedavg_cnn", {}, MNIST, 1_663_370),  # McMahan et al. (2017)'s CNN, the paper's figure
    ("resnet18", {}, CIFAR10, 11_173_962),  # Buzzega et al. (2020, DER)'s ResNet-18 (Mammoth)
]


@pytest.mark.parametrize(
    ("name", "settings", "spec", "count"),
    PAPER_MODELS,
    ids=["mlp", "mlp-2nn", "fedavg_cnn", "resnet18-der"],
)
def test_paper_models_have_the_papers_parameter_counts(name, settings, spec, count):
    model = build(name, spec, **settings)
    assert sum(p.numel() for p in model.parameters()) == count
