"""Contract tests over every registered model: a new model is tested the moment it exists."""

import pytest
import torch

from paralab.platform.config import validate_section
from paralab.platform.models import MODELS, Classifier, InputSpec

SPECS = [InputSpec(1, (8, 8), 10), InputSpec(3, (32, 32), 7)]


def build(name: str, spec: InputSpec) -> Classifier:
    entry = MODELS.get(name)
    return entry.obj(validate_section("model", {"name": name}, entry.config), spec)


@pytest.mark.parametrize("spec", SPECS, ids=["1x8x8", "3x32x32"])
@pytest.mark.parametrize("name", MODELS.names())
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


@pytest.mark.parametrize("name", MODELS.names())
def test_reset_head_changes_outputs_and_keeps_the_backbone(name):
    spec = SPECS[0]
    model = build(name, spec).eval()
    x = torch.randn(2, spec.in_channels, *spec.image_size)
    before = model.forward_features(x)
    model.reset_head(3)
    assert model(x).shape == (2, 3)
    assert torch.allclose(model.forward_features(x), before)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_documents_itself(name):
    assert MODELS.get(name).description


@pytest.mark.parametrize("name", MODELS.names())
def test_channels_last_changes_the_layout_not_the_model(name):
    """``trainer.channels_last`` (on by default) makes conv weights NHWC; outputs and the
    state dict a checkpoint or a federated client exchanges stay the same."""
    from paralab.api import compose
    from paralab.platform.runner import build_model

    spec = SPECS[1]
    models = {}
    for flag in (False, True):
        torch.manual_seed(0)
        config = compose("quickstart_offline", [f"model={name}", f"trainer.channels_last={flag}"])
        models[flag] = build_model(config, spec).eval()
    convs = [p for p in models[True].parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not models[False].state_dict().keys() ^ models[True].state_dict().keys()
    x = torch.randn(3, spec.in_channels, *spec.image_size)
    assert torch.allclose(models[False](x), models[True](x), atol=1e-5)
    models[False].load_state_dict(models[True].state_dict())
