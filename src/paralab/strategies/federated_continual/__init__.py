"""``paradigm=federated_continual``: Flower clients that each learn from their own stream."""
