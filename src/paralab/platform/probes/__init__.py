"""Frozen-feature probes: how well a run's backbone separates the classes of a labelled dataset.

Why: a pretext task's own accuracy (or a continual or federated run's test accuracy) says little
about the features a backbone learned. A linear probe (logistic regression on frozen features)
and a k-NN classifier measure that directly, on the same footing for every paradigm and task.

The modules: :mod:`.features` (features of a split, computed once), :mod:`.knn` and
:mod:`.linear` (the two probes on cached features), :mod:`.protocol` (train split -> test split,
the ``probe/...`` metrics), :mod:`.run` (after a run, on a run folder, on a random init) and
:mod:`.overrides` (a saved run config with ``key=value`` overrides). Nothing is imported here,
so the pretext tasks can use :func:`.knn.knn_predict` without loading the rest.
"""
