"""Self-supervised pretext tasks: each makes its own targets from unlabelled images.

See :mod:`.base` for what they share (the k-NN monitor, the outputs and targets they pass
around); one module per objective registers it in :data:`paralab.platform.tasks.TASKS`.
"""
