"""Lightning modules, one per task type."""
