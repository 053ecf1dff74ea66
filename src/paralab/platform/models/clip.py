"""CLIP (Radford et al. 2021): an image tower and a text tower trained so that matching
image-caption pairs have the most similar L2-normalised embeddings in a batch.

Why open_clip's text tower, tokenizer and loss rather than our own: they are the reference
implementation the CLIP literature reports with (causal text transformer pooled at the
end-of-text token, the 49,408-token byte-pair vocabulary, the symmetric cross-entropy and its
cross-process gather), the vocabulary ships in the wheel (no download, works offline), and
weights or captions tokenized for open_clip mean the same thing here. The image tower is ours:
the registered classification model named in ``model.backbone`` (any of them: the tower reads
only the pooled ``forward_features`` vector, so the flat ``mlp`` serves too), kept as
``self.backbone`` so ``model.init_from`` loads a classification or self-supervised backbone into
it and probes and hooks see it as any model's, then a bias-free linear projection to
``embed_dim``.

How: ``text`` is ``open_clip.transformer.TextTransformer`` (vocabulary 49,408, width
``text_width``, ``text_layers`` blocks of ``text_heads`` heads, ``context_length`` positions,
projection to ``embed_dim``); tokens come from open_clip's ``SimpleTokenizer`` (start, BPE ids,
end, zero padding to ``context_length``; longer captions are cut and end with the end token).
``logit_scale`` is the learned log temperature, a parameter (so checkpoints and federated
averaging carry it), used as ``exp`` clamped to ``[1, max_logit_scale]``; in training mode the
parameter itself is clamped to ``[0, ln max_logit_scale]`` before use, open_clip's rule after
each optimizer step, so a scale pushed past the bound still comes back. :func:`contrastive_loss`
is open_clip's ``ClipLoss`` (see there for the gather under DDP).

Cost (1x64x64 images, backbone ``{name: cnn, channels: [16, 32, 64, 128]}``, defaults
otherwise; one training step, forward + loss + backward + Adam, batch 64 with 32-token captions,
best of 5 after a warm-up, ``nice -n 19`` on the 2-core CPU while a long benchmark held both
cores, so the times are inflated): 3,373,937 parameters (image tower 97,392 + projection 8,192,
text tower 3,268,352, ``logit_scale`` 1), 1.0-1.6 s a step over three runs (in one of them
forward 0.5 s, loss + backward 1.0 s, Adam 0.18 s). The token embedding alone is 49,408 x
``text_width`` = 3,162,112 parameters (94 % of the model): every federated round sends it to
and from each client, 12,648,448 bytes (12.6 MB) each way in float32 of the 13,497,700 of the
whole state dict; and its gradient is dense, so every step updates all of it. Measured with::

    import time, torch
    from paralab.platform.config import validate_section
    from paralab.platform.models import MODELS, InputSpec
    from paralab.platform.models.clip import contrastive_loss
    entry = MODELS.get("clip")
    values = {"name": "clip", "backbone": {"name": "cnn", "channels": [16, 32, 64, 128]}}
    model = entry.obj(validate_section("model", values, entry.config), InputSpec(1, (64, 64), 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(64, 1, 64, 64)
    tokens = model.tokenize([f"a photo of the digit {i % 10} drawn by hand" for i in range(64)])
    def step():
        t = time.perf_counter()
        opt.zero_grad(); contrastive_loss(*model(x, tokens)).backward(); opt.step()
        return time.perf_counter() - t
    step(); print(sum(p.numel() for p in model.parameters()), min(step() for _ in range(5)))
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded
from paralab.platform.models.base import Backbone, HasBackbone, InputSpec, ModelConfig
from paralab.platform.models.dense import SECTION, _plain
from paralab.platform.models.registry import MODELS, register_model

#: open_clip's ``SimpleTokenizer`` vocabulary: 2 x 256 bytes, 48,894 BPE merges, start and end.
VOCAB_SIZE = 49408


@dataclass
class CLIPConfig(ModelConfig):
    """``backbone``: the image tower's classification model and options; ``embed_dim``: the
    shared embedding's width; ``context_length``, ``text_width``, ``text_layers``,
    ``text_heads``: the text transformer; ``init_logit_scale``: the log temperature at start
    (ln(1/0.07) as in CLIP); ``max_logit_scale``: the bound on ``exp(logit_scale)``."""

    name: str = "clip"
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "cnn"})
    embed_dim: int = bounded(64, ge=1)
    context_length: int = bounded(32, ge=2)
    text_width: int = bounded(64, ge=1)
    text_layers: int = bounded(2, ge=1)
    text_heads: int = bounded(2, ge=1)
    init_logit_scale: float = bounded(math.log(1 / 0.07), ge=0)
    max_logit_scale: float = bounded(100.0, ge=1)


class CLIPOutput(NamedTuple):
    """``image`` and ``text``: (N, D) L2-normalised embeddings of N pairs; ``logit_scale``:
    the scalar ``exp(logit_scale)``, clamped to ``[1, max_logit_scale]``."""

    image: torch.Tensor
    text: torch.Tensor
    logit_scale: torch.Tensor


class CLIP(HasBackbone):
    """Image tower (``backbone`` + ``image_projection``), text tower (``text``) and the
    learned ``logit_scale``; ``forward(images, tokens)`` gives a :class:`CLIPOutput`."""

    def __init__(self, backbone: Backbone, cfg: CLIPConfig) -> None:
        from open_clip.transformer import TextTransformer

        super().__init__(backbone)
        self.embed_dim = cfg.embed_dim
        self.context_length = cfg.context_length
        self.max_log_scale = math.log(cfg.max_logit_scale)
        self.image_projection = nn.Linear(self.num_features, cfg.embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=self.num_features**-0.5)
        self.text = TextTransformer(
            context_length=cfg.context_length,
            vocab_size=VOCAB_SIZE,
            width=cfg.text_width,
            heads=cfg.text_heads,
            layers=cfg.text_layers,
            output_dim=cfg.embed_dim,
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, embed_dim) unit vectors."""
        return F.normalize(self.image_projection(self.forward_features(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(M, context_length) token ids (:meth:`tokenize`) -> (M, embed_dim) unit vectors."""
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)}: expected (M, {self.context_length}), "
                "as model.tokenize(captions) gives"
            )
        return F.normalize(self.text(tokens), dim=-1)

    def encode_classes(self, tokens: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Class-major prompt tokens (``num_classes`` x T templates, as
        :func:`~paralab.platform.data.captions.class_prompts` orders them) -> (C, T, embed_dim),
        what :func:`zero_shot_logits` takes."""
        return self.encode_text(tokens).view(num_classes, -1, self.embed_dim)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (M, context_length) long token ids."""
        return tokenize(texts, self.context_length)

    def logit_scale_exp(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped to ``[1, max_logit_scale]`` (module docstring)."""
        if self.training:  # open_clip clamps the parameter after each step; we do it before use
            self.logit_scale.data.clamp_(0, self.max_log_scale)  # .data: no autograd version bump
            return self.logit_scale.exp()  # the gradient flows at the bounds too
        return self.logit_scale.clamp(0, self.max_log_scale).exp()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
        return CLIPOutput(
            self.encode_image(images), self.encode_text(tokens), self.logit_scale_exp()
        )


def tokenize(texts: list[str], context_length: int = 32) -> torch.Tensor:
    """open_clip's ``SimpleTokenizer`` (bundled vocabulary, no network): (M, context_length)
    long ids, start token first, end token last (cut captions end with it too), zeros after."""
    from open_clip.tokenizer import tokenize as open_clip_tokenize

    return open_clip_tokenize(list(texts), context_length=context_length)


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: the mean of image->text and text->image cross-entropy
    over the similarity matrix ``logit_scale * image @ text.T``, pair i matching pair i.

    Under torch.distributed (when ``gather`` and a process group is initialised) the matrix is
    global, as in open_clip: every process gathers all processes' embeddings
    (``ClipLoss(gather_with_grad=True, local_loss=False)``) and computes the same loss over the
    whole batch. ``gather_with_grad`` rather than open_clip's default (gather without gradient,
    local embeddings put back in): its backward sums each process's gradient into the
    embeddings' owner, so after DDP averages the parameters' gradients they equal one
    process's on the whole batch; the default leaves the towers' gradients ``world_size``
    times smaller than ``logit_scale``'s. Every process must call it with the same number of
    pairs (DDP's sampler gives that; a mismatch is a ValueError, not a hang in the gather).
    Pass ``gather=False`` to score one process's batch alone (e.g. evaluation on rank 0).
    """
    from open_clip.loss import ClipLoss

    rank, world_size = 0, 1
    if gather and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if world_size > 1:
        _check_equal_batches(image)
    loss = ClipLoss(gather_with_grad=True, rank=rank, world_size=world_size)
    return loss(image, text, logit_scale)


def zero_shot_logits(
    image_emb: torch.Tensor, class_text_emb: torch.Tensor, logit_scale: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """CLIP's zero-shot classifier with prompt ensembling: each class's (C, T, D) template
    embeddings are normalised, averaged and renormalised; the (N, C) result is ``logit_scale``
    times the cosine between each (N, D) image embedding and each class."""
    classes = F.normalize(F.normalize(class_text_emb, dim=-1).mean(dim=1), dim=-1)
    return logit_scale * F.normalize(image_emb, dim=-1) @ classes.T


def build_image_backbone(values: Mapping[str, Any] | None, spec: InputSpec) -> Backbone:
    """The :class:`Backbone` of the classification model ``values`` (``model.backbone``) names,
    validated as :func:`paralab.platform.models.dense.build_backbone` does (keys named
    ``model.backbone.<key>``), but without its demand for spatial maps."""
    from paralab.platform.config import validate_section

    values = _plain(values)
    if values.get("init_from") is not None:
        raise ConfigError(
            f"{SECTION}.init_from: a backbone's weights are set for the whole model. Set "
            f"model.init_from={values['init_from']} instead, and drop {SECTION}.init_from"
        )
    choices = [
        e.name for e in MODELS.entries() if e.meta.get("task", "classification") == "classification"
    ]
    name = values.get("name")
    if name not in choices:
        problem = " is missing" if name is None else f"={name!r} is not a classification model"
        raise ConfigError(f"{SECTION}.name{problem}: choose one of {', '.join(choices)}")
    entry = MODELS.get(str(name))
    cfg = validate_section(SECTION, values, entry.config) if entry.config else values
    try:  # the classifier's head is dropped; an image-text set may declare no classes
        model = entry.obj(
            cfg, InputSpec(spec.in_channels, spec.image_size, max(spec.num_classes, 1))
        )
    except ConfigError as error:  # builders name their keys model.<key>: here model.backbone.<key>
        message = re.sub(r"\bmodel\.(?!backbone\b)", f"{SECTION}.", str(error))
        raise type(error)(message) from None
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, Backbone):
        raise ConfigError(f"{SECTION}.name={name!r}: its model has no Backbone under .backbone")
    return backbone


@register_model("clip", config=CLIPConfig, task="image_text")
def clip(cfg: CLIPConfig, spec: InputSpec) -> CLIP:
    """CLIP: a registered backbone (default cnn) and open_clip's text transformer."""
    if cfg.text_width % cfg.text_heads:
        raise ConfigError(
            f"model.text_width={cfg.text_width} must be a multiple of "
            f"model.text_heads={cfg.text_heads}: set e.g. model.text_heads=2"
        )
    return CLIP(build_image_backbone(cfg.backbone, spec), cfg)


def _check_equal_batches(image: torch.Tensor) -> None:
    """Every process's batch size, gathered, so unequal batches fail clearly."""
    sizes = [
        image.new_zeros((), dtype=torch.long) for _ in range(torch.distributed.get_world_size())
    ]
    torch.distributed.all_gather(sizes, image.new_tensor(image.shape[0], dtype=torch.long))
    if len({int(s) for s in sizes}) > 1:
        raise ValueError(
            f"contrastive_loss: the processes hold batches of {[int(s) for s in sizes]} pairs; "
            "the global gather needs equal batches (a DistributedSampler with equal-size batches)"
        )
