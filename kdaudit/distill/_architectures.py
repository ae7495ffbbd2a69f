"""The small networks of demos, tests and lineage zoos live with the models (:mod:`kdaudit.models._networks`), where
the architecture registry builds them; re-exported here under their documented names."""

from kdaudit.models._networks import mlp, small_cnn

__all__ = ["mlp", "small_cnn"]
