"""kdaudit.distill."""
