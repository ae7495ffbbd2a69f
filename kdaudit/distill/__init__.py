"""kdaudit.distill: reference knowledge distillation, control models and post-training transforms.

``distill`` trains a torch student with the Hinton loss on a teacher's outputs obtained through the harness;
``train_control`` is the same recipe without the teacher; ``distill_sklearn`` / ``fit_sklearn_control`` do the same
for scikit-learn students; ``finetune``, ``prune`` and ``quantize_int8`` are what a suspect might do afterwards. For causal language models,
``distill_lm_tokens`` (token-level KD), ``distill_lm_sequences`` (sequence-level KD) and ``train_lm`` (the control).
"""

from kdaudit.distill._architectures import mlp, small_cnn
from kdaudit.distill._compress import prune, quantize_int8, sparsity
from kdaudit.distill._lm import distill_lm_sequences, distill_lm_tokens, gpt_lm, train_lm
from kdaudit.distill._loss import kd_loss, soft_targets
from kdaudit.distill._sklearn import distill_sklearn, fit_sklearn_control
from kdaudit.distill._train import TrainingRecord, distill, finetune, query_set, train_control

__all__ = [
    "TrainingRecord",
    "distill",
    "distill_lm_sequences",
    "distill_lm_tokens",
    "distill_sklearn",
    "finetune",
    "fit_sklearn_control",
    "gpt_lm",
    "kd_loss",
    "mlp",
    "prune",
    "quantize_int8",
    "query_set",
    "small_cnn",
    "soft_targets",
    "sparsity",
    "train_control",
    "train_lm",
]

# kdaudit re-exports the function ``distill`` as ``kdaudit.distill``, which hides this subpackage behind that name;
# giving the function the subpackage's public names keeps ``kdaudit.distill.train_control(...)`` working either way.
for _name in __all__:
    if _name != "distill":
        setattr(distill, _name, globals()[_name])
del _name
