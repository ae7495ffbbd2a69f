"""kdaudit.harness."""
