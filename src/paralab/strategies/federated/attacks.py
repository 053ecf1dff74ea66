"""Byzantine clients: which clients attack (a fixed, seeded set) and what they send.

``label_flip`` is applied to a client's targets in its training loop (the task flips them);
``sign_flip`` and ``gaussian`` replace the update the client sends (:func:`poison`).
"""

from __future__ import annotations

import numpy as np


def _seed(seed: int, salt: int) -> int:
    from paralab.strategies.federated.client import client_seed

    return client_seed(seed, 0, 0, salt=salt)


def byzantine_clients(num_clients: int, fraction: float, seed: int) -> set[int]:
    """A fixed, seeded set of ``round(fraction * num_clients)`` clients."""
    count = round(fraction * num_clients)
    order = np.random.default_rng(_seed(seed, 17)).permutation(num_clients)
    return set(order[:count].tolist())


def poison(model, global_params, byz, seed: int) -> None:
    """Sign flip: send ``g - scale * (w - g)``; gaussian: send ``g + N(0, scale^2)``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, g in zip(model.parameters(), global_params, strict=True):
            if byz.attack == "sign_flip":
                p.copy_(g - byz.scale * (p - g))
            else:
                p.copy_(g + byz.scale * torch.randn(p.shape, generator=gen).to(p.device))
