"""Output kinds of language models (per-token top-k log-probabilities, generated text): defined in
:mod:`kdaudit._lm_outputs`, below the models that produce them, and re-exported here for the harness's users."""

from kdaudit._kinds import OutputKind
from kdaudit._lm_outputs import MAX_TOP_K, Generations, TokenTopK

__all__ = ["Generations", "MAX_TOP_K", "OutputKind", "TokenTopK"]
