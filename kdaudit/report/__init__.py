"""kdaudit.report."""
