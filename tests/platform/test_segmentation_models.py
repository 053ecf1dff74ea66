"""Contract tests over every segmentation model x every backbone that can carry a dense head,
and the transfer of a trained backbone between tasks (``load_backbone``)."""

import pytest
import torch
from torch.nn import functional as F

from paralab.errors import ConfigError
from paralab.platform.config import validate_section
from paralab.platform.models import MODELS, Backbone, Classifier, InputSpec
from paralab.platform.models.dense import dense_backbones
from paralab.platform.models.transfer import load_backbone

SEGMENTATION = [e.name for e in MODELS.entries() if e.meta.get("task") == "segmentation"]
BACKBONES = dense_backbones()  # every classification model with a spatial stage
# Small settings for the backbones we know; a new backbone is tested with its defaults.
SMALL = {
    "cnn": {"channels": [16, 32, 64]},
    "fedavg_cnn": {"channels": [8, 16], "hidden": 16},
    "resnet18": {},
    "vit": {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4},
}
# Square, tall, non-square, and an odd size (for the ViT, an odd patch grid: 9x9).
SIZES = [(64, 64), (28, 28), (24, 40)]
ODD = {"vit": (36, 36)}
PAIRS = [(model, backbone) for model in SEGMENTATION for backbone in BACKBONES]
IDS = [f"{model}-{backbone}" for model, backbone in PAIRS]


def settings(backbone: str, **extra) -> dict:
    return {"name": backbone, **SMALL.get(backbone, {}), **extra}


def build(name: str, spec: InputSpec, backbone: dict | None = None, **options) -> torch.nn.Module:
    entry = MODELS.get(name)
    values = {"name": name, **({"backbone": backbone} if backbone else {}), **options}
    return entry.obj(validate_section("model", values, entry.config), spec)


def test_the_registry_holds_the_segmentation_models_and_their_backbones():
    assert {"unet", "fcn", "segmenter"} <= set(SEGMENTATION)
    assert {"cnn", "resnet18", "vit"} <= set(BACKBONES)
    assert "mlp" not in BACKBONES  # flat stages: no dense head
    assert not set(SEGMENTATION) & set(BACKBONES)
    assert all(MODELS.get(name).description for name in SEGMENTATION)


@pytest.mark.parametrize(("name", "backbone"), PAIRS, ids=IDS)
def test_logits_come_at_the_input_resolution(name, backbone):
    torch.manual_seed(0)
    for size in [*SIZES, ODD.get(backbone, (30, 30))]:
        for channels in (3, 1) if size == (28, 28) else (3,):
            spec = InputSpec(channels, size, 4)
            model = build(name, spec, settings(backbone)).eval()
            with torch.no_grad():
                logits = model(torch.randn(2, channels, *size))
            assert logits.shape == (2, 4, *size), (size, channels)
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "backbone"), PAIRS, ids=IDS)
def test_gradients_reach_the_backbone_and_eval_is_deterministic(name, backbone):
    torch.manual_seed(0)
    spec = InputSpec(3, (32, 32), 3)
    model = build(name, spec, settings(backbone))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4, 32, 32))
    F.cross_entropy(model(x), y).backward()
    first = next(model.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    head = [n for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert head and all(model.get_parameter(n).grad is not None for n in head)

    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))

    # The surface a Classifier has: the backbone under the same name, its stages, its width.
    assert isinstance(model.backbone, Backbone)
    assert model.num_features == model.backbone.num_features
    info = model.feature_info
    assert all(info_["module"].startswith("backbone.") for info_ in info)
    assert all(isinstance(model.get_submodule(i["module"]), torch.nn.Module) for i in info)
    assert len(model.forward_intermediates(x)) == len(info)
    assert model.forward_features(x).shape == (4, model.num_features)
    entry = MODELS.get(backbone)
    classifier = entry.obj(validate_section("model", settings(backbone), entry.config), spec)
    assert classifier.backbone.state_dict().keys() == model.backbone.state_dict().keys()


def squares(n: int, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """White squares on a black canvas; the mask (class 1) is the square."""
    g = torch.Generator().manual_seed(seed)
    images, masks = torch.zeros(n, 3, size, size), torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        side = int(torch.randint(6, 13, (1,), generator=g))
        top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
        images[i, :, top : top + side, left : left + side] = 1
        masks[i, top : top + side, left : left + side] = 1
    return images, masks


@pytest.mark.parametrize(("name", "backbone"), PAIRS, ids=IDS)
def test_a_few_steps_on_squares_learn_where_the_square_is(name, backbone):
    """20 Adam steps on 8 canvases take the loss well below its start and below the entropy of
    the pixel classes (what predicting the foreground fraction everywhere would reach).
    Transformer decoders want a smaller step (as in the paper's recipes)."""
    torch.manual_seed(0)
    images, masks = squares(8)
    share = masks.float().mean()
    prior = -(share * share.log() + (1 - share) * (1 - share).log()).item()  # ~0.44 nats
    model = build(name, InputSpec(3, (24, 24), 2), settings(backbone))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3 if name == "segmenter" else 1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0] and losses[-1] < 0.8 * prior, (prior, losses)


# -- config errors ------------------------------------------------------------------------------

SPEC = InputSpec(3, (32, 32), 3)


@pytest.mark.parametrize("name", SEGMENTATION)
@pytest.mark.parametrize(
    ("backbone", "key", "words"),
    [
        ({"name": "resnet"}, "model.backbone.name", "resnet18"),  # unknown: the valid ones listed
        ({"name": "unet"}, "model.backbone.name", "segmentation model"),
        ({"name": "mlp"}, "model.backbone.name", "flat"),
        # the default name (resnet18) stays: the key is checked against its options
        ({"channels": [8]}, "model.backbone.channels", "Valid keys under 'model.backbone'"),
        ({"name": "cnn", "chanels": [8]}, "model.backbone.chanels", "channels"),
        ({"name": "cnn", "dropout": 2.0}, "model.backbone.dropout", "[0, 1)"),
        ({"name": "vit", "patch_size": 5}, "model.backbone.patch_size", "divide"),
    ],
    ids=["unknown", "segmentation", "flat", "default-name", "bad-key", "bad-value", "bad-patch"],
)
def test_a_wrong_backbone_is_a_config_error_naming_the_key(name, backbone, key, words):
    with pytest.raises(ConfigError) as error:
        build(name, SPEC, backbone)
    message = str(error.value)
    assert key in message and words in message, message
    if key == "model.backbone.name":  # the way out: the backbones that work
        assert "cnn" in message and "vit" in message and "unet" not in message.split(":")[-1]


def test_a_backbone_section_without_a_name_lists_the_backbones():
    from paralab.platform.models.dense import build_backbone

    with pytest.raises(ConfigError, match=r"model.backbone.name is missing: choose one of cnn"):
        build_backbone({}, SPEC)


def test_bad_decoder_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"model\.decoder_channels"):
        build("unet", SPEC, settings("cnn"), decoder_channels=[])
    with pytest.raises(ConfigError, match=r"model\.decoder_channels"):
        build("unet", SPEC, settings("cnn"), decoder_channels=[16, 0])
    with pytest.raises(ConfigError, match=r"model\.attention"):
        build("unet", SPEC, settings("cnn"), attention="cbam")
    with pytest.raises(ConfigError, match=r"model\.decoder_heads=3 must divide"):
        build("segmenter", SPEC, settings("vit"), decoder_heads=3)


def test_unet_decoder_width_and_stage_choices():
    """Fewer widths than stages: stages spread evenly, the deepest kept; a ViT's equal strides
    are lifted to finer grids; fewer stages than widths: the narrowest widths are used."""
    from paralab.platform.models.unet import lift_factors, pick_stages

    assert pick_stages(12, 4) == [0, 4, 7, 11]
    assert pick_stages(3, 5) == [0, 1, 2]
    assert pick_stages(5, 1) == [4]
    assert lift_factors([4, 4, 4, 4]) == [4, 4, 2, 1]
    assert lift_factors([1, 1, 2, 4, 8]) == [1, 1, 1, 1, 1]  # ResNet's small stem: as it is
    assert lift_factors([2, 4, 8, 16, 32]) == [1] * 5
    model = build("unet", SPEC, settings("cnn"), decoder_channels=[64, 32, 16, 8])
    assert model.head.in_channels == 8 and len(model.decoder.blocks) == 3
    vit = build("unet", SPEC, settings("vit", depth=6), decoder_channels=[32, 16, 8])
    assert vit.stages == [0, 3, 5] and len(vit.decoder.blocks) == 3


# -- load_backbone ------------------------------------------------------------------------------

CNN = settings("cnn")


def trained_classifier(in_channels: int = 3, backbone: dict = CNN) -> Classifier:
    """A cnn classifier whose weights and BN statistics differ from a fresh model's."""
    torch.manual_seed(1)
    entry = MODELS.get(backbone["name"])
    spec = InputSpec(in_channels, (32, 32), 10)
    model = entry.obj(validate_section("model", backbone, entry.config), spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model(torch.randn(4, in_channels, 32, 32))  # moves the running statistics
    return model


def assert_same_backbone(model: torch.nn.Module, trained: torch.nn.Module) -> None:
    mine, theirs = model.backbone.state_dict(), trained.backbone.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_load_backbone_from_lightning_federated_and_continual_checkpoints(tmp_path):
    trained = trained_classifier()
    state = trained.state_dict()
    count = len(trained.backbone.state_dict())
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    files = {
        tmp_path / "epoch000.ckpt": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
        tmp_path / "run" / "checkpoints" / "last.pt": {"model": state, "loop": {"round": 3}},
        tmp_path / "continual.pt": {"format": 2, "strategy": {"model": {"tensors": state}}},
        tmp_path / "plain.pt": state,
    }
    for path, payload in files.items():
        torch.save(payload, path)
    for path in [*files, tmp_path / "run", str(tmp_path / "run" / "checkpoints")]:
        model = build("unet", SPEC, CNN)
        assert load_backbone(model, path) == count, path
        assert_same_backbone(model, trained)

    # A dense model's backbone goes back again, into a classifier.
    model = build("fcn", SPEC, CNN)
    load_backbone(model, str(tmp_path / "run"))
    assert_same_backbone(model, trained)
    torch.save({"model": model.state_dict()}, tmp_path / "fcn.pt")
    classifier = trained_classifier()
    torch.nn.init.zeros_(next(classifier.backbone.parameters()))
    assert load_backbone(classifier, tmp_path / "fcn.pt") == count
    assert_same_backbone(classifier, trained)


def test_load_backbone_errors_name_the_key_the_file_and_the_fix(tmp_path):
    model = build("unet", SPEC, CNN)
    key = "model.init_from"

    with pytest.raises(ConfigError, match=f"{key}=.*nowhere.ckpt.*no such file"):
        load_backbone(model, tmp_path / "nowhere.ckpt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ConfigError, match=f"{key}=.*empty_run.*holds no checkpoint"):
        load_backbone(model, tmp_path / "empty_run")

    torch.save({"state_dict": {"model.head.weight": torch.zeros(2, 2)}}, tmp_path / "head.ckpt")
    with pytest.raises(ConfigError, match=f"{key}=.*head.ckpt.*no backbone tensors"):
        load_backbone(model, tmp_path / "head.ckpt")

    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"{key}=.*garbage.pt.*cannot be loaded"):
        load_backbone(model, tmp_path / "garbage.pt")

    gray = trained_classifier(in_channels=1)  # trained on 1-channel images
    torch.save({"model": gray.state_dict()}, tmp_path / "gray.pt")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with pytest.raises(ConfigError) as error:
        load_backbone(model, tmp_path / "gray.pt")
    message = str(error.value)
    assert key in message and "gray.pt" in message and "'stages.0.0.weight'" in message
    assert "[16, 1, 3, 3] in the checkpoint but [16, 3, 3, 3] in the model" in message
    assert "The checkpoint's model is unknown (no config.yaml in its run folder)" in message
    assert "settings the checkpoint was trained with" in message and f"{key}=null" in message
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded

    deeper = trained_classifier(backbone=settings("cnn", channels=[16, 32, 64, 64]))
    torch.save({"model": deeper.state_dict()}, tmp_path / "deeper.pt")
    with pytest.raises(ConfigError, match=r"does not match.*has 6 the model lacks"):
        load_backbone(model, tmp_path / "deeper.pt")
