"""kdaudit.lineage."""
