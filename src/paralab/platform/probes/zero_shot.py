"""Zero-shot classification of a labelled test split by class-name prompts (``probe.zero_shot``).

Why a probe: CLIP's claim is that its image tower, trained on captions only, classifies any
labelled set whose class names its text tower can read; so the end of a CLIP run (and
``paralab probe``) tests it on a registered classification dataset it never trained on
(``probe.data=fashion_mnist`` after training on captioned canvases). The prompts are the run's
``task.templates`` filled with the probe set's class names in the captions' words
(:func:`~paralab.platform.data.captions.class_prompts`), ensembled per class as CLIP does; the
score is plain accuracy (chance: 1 / classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from paralab.platform.data.base import InMemoryImages
from paralab.platform.data.captions import class_prompts
from paralab.platform.probes.features import extract_features


def has_text_tower(model: nn.Module) -> bool:
    """Whether ``model`` can embed images and prompts into one space (a CLIP model)."""
    return all(callable(getattr(model, m, None)) for m in ("encode_image", "encode_classes"))


def zero_shot_accuracy(
    model: nn.Module,
    images: InMemoryImages,
    classes: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> float:
    """The share of ``images`` whose nearest class prompt ensemble is their label."""
    from paralab.platform.models.clip import zero_shot_logits

    embedded, labels = extract_features(
        model, images, batch_size, device, forward=model.encode_image
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tokens = model.tokenize(class_prompts(classes, templates)).to(device)
            text = model.encode_classes(tokens, len(classes))
    finally:
        model.train(was_training)
    predicted = zero_shot_logits(embedded, text).argmax(1)
    return float((predicted == labels).double().mean())
