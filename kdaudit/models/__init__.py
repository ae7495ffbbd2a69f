"""kdaudit.models."""
