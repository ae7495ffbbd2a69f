"""kdaudit.data."""
