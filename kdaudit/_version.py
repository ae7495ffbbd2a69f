"""The package version, in a module of its own so that any layer can read it without importing the package."""

__version__ = "0.1.0"
#: the schema of results.json (the audit writes it, the gate checks it)
RESULTS_SCHEMA = "kdaudit.results/1"
