"""CLIP: the contrastive loss on hand-made batches, zero-shot prompt ensembling, the tokenizer
offline, the model's surface and clamped temperature, a short overfit, backbone transfer, the
yaml, and the DDP gather (two gloo processes give one process's loss and gradients)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from paralab.errors import ConfigError
from paralab.platform.config import config_dir, validate_section
from paralab.platform.models import MODELS, Backbone, InputSpec
from paralab.platform.models.clip import (
    VOCAB_SIZE,
    CLIPOutput,
    contrastive_loss,
    tokenize,
    zero_shot_logits,
)
from paralab.platform.models.transfer import load_backbone

SMALL = {"embed_dim": 16, "context_length": 12, "text_width": 16, "text_layers": 1}
CNN = {"name": "cnn", "channels": [8, 16]}
SPEC = InputSpec(1, (16, 16), 10)
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def build(spec: InputSpec = SPEC, **options):
    entry = MODELS.get("clip")
    values = {"name": "clip", "backbone": CNN, **SMALL, **options}
    return entry.obj(validate_section("model", values, entry.config), spec)


def test_the_loss_of_matching_orthonormal_embeddings_is_known():
    n, s = 4, 3.0
    emb = torch.eye(n, 6)
    expected = math.log(1 + (n - 1) * math.exp(-s))  # each row: the match s against n-1 zeros
    assert contrastive_loss(emb, emb, torch.tensor(s)).item() == pytest.approx(expected, rel=1e-6)


def test_the_loss_averages_the_two_directions():
    """image = [e1, e2], text = [e1, e1]: image rows tie (log 2 each); text rows score the
    first image at s, so text 0 loses log(1 + e^-s) and text 1 log(1 + e^s)."""
    s = 2.0
    image, text = torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    per_text = (math.log(1 + math.exp(-s)) + math.log(1 + math.exp(s))) / 2
    expected = (math.log(2) + per_text) / 2
    got = contrastive_loss(image, text, torch.tensor(s)).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_zero_shot_averages_normalised_templates_and_picks_the_matching_class():
    torch.manual_seed(0)
    classes, dim = 3, 5
    basis = torch.eye(dim)
    offsets = torch.stack([0.3 * basis[4], -0.3 * basis[3]])  # template-specific directions
    text = basis[:classes, None, :] + offsets[None]  # (C, T, D)
    text = text * torch.tensor([1.0, 50.0])[None, :, None]  # norms must not weigh templates
    images = basis[[2, 0, 1]] + 0.05 * torch.randn(3, dim)
    logits = zero_shot_logits(images, text, logit_scale=10.0)
    assert logits.shape == (3, classes)
    assert logits.argmax(dim=1).tolist() == [2, 0, 1]
    direction = basis[0] + 0.15 * (basis[4] - basis[3])  # class 0: mean of unit templates
    expected = 10.0 * torch.nn.functional.cosine_similarity(images[1], direction, dim=0)
    assert logits[1, 0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_tokenizer_works_offline_and_round_trips_a_caption(tmp_path):
    """In a fresh process with sockets refused and empty caches, as on a cluster node."""
    code = textwrap.dedent(
        """
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network refused by the test")
        socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse
        from open_clip.tokenizer import SimpleTokenizer, decode
        from paralab.platform.models.clip import VOCAB_SIZE, tokenize
        assert SimpleTokenizer(context_length=12).vocab_size == VOCAB_SIZE
        tokens = tokenize(["A photo of a Cat.", "x " * 40], context_length=12)
        assert tokens.shape == (2, 12) and str(tokens.dtype) == "torch.int64", tokens
        first = tokens[0][tokens[0] > 0].tolist()
        assert first[0] == 49406 and first[-1] == 49407, first
        print(decode(tokens[0, 1 : len(first) - 1]).strip())
        assert tokens[1, -1].item() == 49407  # a cut caption still ends with the end token
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "a photo of a cat ."


def test_forward_gives_unit_embeddings_and_a_clamped_scale():
    torch.manual_seed(0)
    model = build()
    images, tokens = torch.randn(3, 1, 16, 16), model.tokenize(WORDS[:3])
    assert tokens.shape == (3, 12) and tokens.dtype == torch.long
    out = model(images, tokens)
    assert isinstance(out, CLIPOutput)
    assert out.image.shape == out.text.shape == (3, 16)
    for emb in (out.image, out.text):
        assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert out.logit_scale.dim() == 0
    assert out.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.forward_features(images).shape == (3, model.num_features)
    assert len(model.forward_intermediates(images)) == len(model.feature_info) == 2
    assert model.feature_info[0]["module"].startswith("backbone.")
    with pytest.raises(ValueError, match=r"expected \(M, 12\)"):
        model.encode_text(tokenize(WORDS[:3], context_length=8))

    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.eval()
    assert model(images, tokens).logit_scale.item() == pytest.approx(100.0)
    assert model.logit_scale.item() == 10.0  # eval leaves the parameter alone
    model.train()
    scale = model(images, tokens).logit_scale
    assert scale.item() == pytest.approx(100.0)
    assert model.logit_scale.item() == pytest.approx(math.log(100))  # clamped as open_clip does
    scale.backward()
    assert model.logit_scale.grad.item() > 0  # at the bound, the gradient still flows back down
    with torch.no_grad():
        model.logit_scale.fill_(-2.0)
    assert model(images, tokens).logit_scale.item() == pytest.approx(1.0)


def test_the_state_dict_holds_the_scale_and_the_vocabulary_and_the_backbone_transfers(tmp_path):
    model = build()
    state = model.state_dict()
    assert state["logit_scale"].shape == ()
    assert state["text.token_embedding.weight"].shape == (VOCAB_SIZE, 16)
    assert isinstance(model.backbone, Backbone)
    torch.manual_seed(1)
    entry = MODELS.get("cnn")
    classifier = entry.obj(validate_section("model", CNN, entry.config), SPEC)
    torch.save({"model": classifier.state_dict()}, tmp_path / "cnn.pt")
    assert load_backbone(model, tmp_path / "cnn.pt") == len(classifier.backbone.state_dict())
    theirs = classifier.backbone.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.backbone.state_dict().items())


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.backbone\.name='fcn'.*choose one of.*cnn"):
        build(backbone={"name": "fcn"})
    with pytest.raises(ConfigError, match=r"model\.backbone\.channels"):
        build(backbone={"name": "cnn", "channels": [0]})
    with pytest.raises(ConfigError, match=r"model\.text_width=16 must be a multiple"):
        build(text_heads=3)
    assert build(backbone={"name": "mlp", "hidden": [8]}).num_features == 8  # flat backbones serve


def test_it_is_registered_for_image_text_and_its_yaml_lists_every_option():
    entry = MODELS.get("clip")
    assert entry.meta.get("task") == "image_text" and entry.description
    values = yaml.safe_load((config_dir() / "model" / "clip.yaml").read_text())
    assert values["backbone"] == {"name": "cnn"}
    assert set(values) == set(vars(entry.config()))
    assert vars(validate_section("model", values, entry.config)) == vars(entry.config())


def test_a_short_overfit_matches_each_image_with_its_caption():
    torch.manual_seed(0)
    model = build(backbone={**CNN, "dropout": 0.0})  # the cnn's dropout slows the fit 3x
    images = torch.randn(8, 1, 16, 16)
    tokens = model.tokenize([f"a picture of the number {w}" for w in WORDS])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        out = model(images, tokens)
        loss = contrastive_loss(*out)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.5 and losses[-1] < 0.1 * losses[0], losses  # ln 8 = 2.08 at chance
    similarity = out.image @ out.text.T
    assert torch.equal(similarity.argmax(dim=1), torch.arange(8))
    assert torch.equal(similarity.argmax(dim=0), torch.arange(8))


# --- DDP: two gloo processes, half the batch each, against one process on the whole batch ---


def _ddp_case() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """An mlp image tower (no batch norm, whose statistics differ on half a batch)."""
    torch.manual_seed(0)
    model = build(backbone={"name": "mlp", "hidden": [32]})
    images = torch.randn(8, 1, 16, 16)
    tokens = tokenize([f"a picture of the number {w}" for w in WORDS], context_length=12)
    return model, images, tokens


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model, images, tokens = _ddp_case()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        part = slice(rank * 4, rank * 4 + 4)
        loss = contrastive_loss(*ddp(images[part], tokens[part]))
        loss.backward()  # DDP averages the gradients over the two processes
        if rank == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            torch.save({"loss": loss.detach(), "grads": grads}, out)
        with pytest.raises(ValueError, match="equal batches"):
            contrastive_loss(*model(images[: 3 + rank], tokens[: 3 + rank]))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_workers(out: str) -> None:
    """The two DDP processes, spawned from a child interpreter (the test's): spawning starts
    multiprocessing's resource tracker, which would otherwise outlive the test as a child of
    pytest, and the tests that check no process is left behind would see it."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)


def test_the_ddp_gather_gives_the_loss_and_gradients_of_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    code = f"from tests.platform.test_clip_model import spawn_workers; spawn_workers({str(out)!r})"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(out)

    model, images, tokens = _ddp_case()
    loss = contrastive_loss(*model(images, tokens))
    loss.backward()
    assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(got["grads"][name], param.grad, rtol=1e-4, atol=1e-7), name
