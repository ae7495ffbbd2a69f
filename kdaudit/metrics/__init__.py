"""kdaudit.metrics."""
