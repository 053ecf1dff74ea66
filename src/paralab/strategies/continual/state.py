"""An Avalanche 0.6 strategy's state as tensors and plain types, and back.

Why: a continual checkpoint must load with ``torch.load(weights_only=True)``, which refuses every
Python object but tensors and plain containers, so that a crafted ``continual.pt`` cannot run code
on ``--resume``. Avalanche keeps a strategy's memory in objects (replay buffers as views of
datasets, EWC/SI/MAS importances in ``ParamData``, the model copies of LwF, iCaRL and GDumb, GEM's
tensors, the clock), so :func:`encode` walks the strategy's attributes and writes each value as
data (:mod:`.state_encoder`):

- tensors and plain values as they are; tuples, sets, dicts and defaultdicts as tagged dicts;
- a module as its tensors (parameters and buffers, by name) and its plain attributes;
- an Avalanche dataset as the ids of its samples (every experience's training set carries a
  :data:`ID` attribute, see :func:`with_ids`) plus the tensor attributes added to it (DER's
  logits);
- any other object as its attributes; loaders and iterators are left out and rebuilt.

:func:`restore` writes the values back *into* a strategy freshly built from the same config
(:mod:`.state_decoder`): the only objects a checkpoint can make are replay-buffer data holders,
and nothing in it names a function or a class that gets called (:mod:`.state_format` lists every
name it may use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
from avalanche.training.plugins import AGEMPlugin

from paralab.strategies.continual.state_decoder import Decoder
from paralab.strategies.continual.state_encoder import Encoder
from paralab.strategies.continual.state_format import (
    ID,
    REBUILT_TYPES,
    TAG,
    StateError,
    check_name,
)

__all__ = ["ID", "StateError", "encode", "restore", "with_ids"]

#: Strategy attributes that are per-batch or per-experience scratch, or rebuilt by the paradigm.
TRANSIENT = {
    "optimizer",
    "experience",
    "adapted_dataset",
    "dataloader",
    "_plain_adapted",
    "mbatch",
    "mb_output",
    "loss",
    "_eval_streams",
    "current_eval_stream",
    "_experiences",  # JointTraining's stream, given again by the paradigm
    "device",
    "evaluator",
    "_criterion",  # the task's loss, given again by the paradigm
    "on_epoch_end",  # WithinExperience's hooks and bookkeeping, set again by the paradigm
    "_restore",
    "_total_epochs",
}
#: The strategy's map of the parameters it optimizes: saved as their names in the model.
PARAMS = "optimized_param_id"


def with_ids(dataset: AvalancheDataset, first: int) -> AvalancheDataset:
    """``dataset`` with :data:`ID` numbering its samples from ``first``: buffers cut from it are
    then saved as these numbers instead of as Python objects."""
    return dataset.update_data_attribute(ID, list(range(first, first + len(dataset))))


def encode(strategy: Any) -> dict[str, Any]:
    """The strategy's state (its attributes minus :data:`TRANSIENT`) as tensors and plain types."""
    encoder = Encoder()
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    state = {}
    for key, value in vars(strategy).items():
        if key in TRANSIENT or isinstance(value, REBUILT_TYPES):
            continue
        if key == PARAMS and isinstance(value, dict):
            state[key] = {TAG: "params", "names": [names[id(p)] for p in value.values()]}
        else:
            state[key] = encoder.encode(value, key)
    return state


def restore(strategy: Any, state: dict[str, Any], train_datasets: Sequence[AvalancheDataset]):
    """Write ``state`` (from :func:`encode`) into ``strategy``, built fresh from the same config.

    ``train_datasets`` are the stream's training experiences (with :data:`ID`), from which saved
    buffers are cut again. Raises :class:`StateError` when the state does not fit the strategy.
    """
    if not isinstance(state, dict):
        raise StateError("the strategy state is not a dict")
    decoder = Decoder(strategy, train_datasets)
    for key, value in state.items():
        check_name(key, "strategy")
        if key not in TRANSIENT:
            setattr(strategy, key, decoder.decode(value, getattr(strategy, key, None), key))
    for plugin in strategy.plugins:
        _rebuild(plugin)


def _rebuild(plugin: Any) -> None:
    """Rebuild what a plugin derives from its saved state (A-GEM's memory loader, as Avalanche's
    ``update_memory`` builds it: nothing is drawn until the first batch)."""
    if isinstance(plugin, AGEMPlugin) and plugin.buffers:
        plugin.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            plugin.buffers,
            batch_size=plugin.sample_size // len(plugin.buffers),
            num_workers=0,
            pin_memory=False,
            persistent_workers=False,
        )
        plugin.buffer_dliter = iter(plugin.buffer_dataloader)
