"""The lineage section's computation: was each student derived from the teacher?

The reference and control pool does not depend on the student, so it runs once per audit: every further student
reads the pool's outputs from the output cache (the audit's ``cache_dir``, else a temporary one for this audit) and
its student-independent statistics from one ``memo`` the section owns for the audit.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from typing import Any

from kdaudit.sections._base import ModelContext, ModelResults

__all__ = ["compute_lineage"]


def compute_lineage(context: ModelContext) -> ModelResults:
    """Every student's lineage test against the teacher, sharing one run of the reference and control pool."""
    from kdaudit.lineage import lineage_test

    students = list(context.students)
    probe_data = context.data if context.probes is None else context.probes
    references = list(context.references)
    pool_cache = contextlib.nullcontext(context.cache_dir) if context.cache_dir is not None or len(students) < 2 \
        else tempfile.TemporaryDirectory(prefix="kdaudit-pool-")
    memo: dict[bytes, Any] = {}  # the pool's statistics that do not depend on the student, for this audit
    by_student: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with pool_cache as pool_dir:
        for student in students:
            context.progress(f"lineage: was {student.name} distilled from {context.teacher.name}? "
                             f"({len(references)} references)")
            t0 = time.perf_counter()
            options = {"seed": context.seed, "batch_size": context.batch_size, "cache_dir": pool_dir,
                       "device": context.device, "precision": context.precision,  # one policy for every model
                       "memo": memo,
                       "n_replicates": context.bootstrap.n_replicates,  # the audit's replicates reach every section
                       **dict(context.options)}
            by_student[student.name] = lineage_test(context.teacher, student, probe_data, references=references,
                                                    controls=list(context.controls) or None,
                                                    positive_controls=list(context.positive_controls) or None,
                                                    **options)
            timings[f"{student.name}/lineage"] = time.perf_counter() - t0
    return ModelResults(by_student=by_student, timings=timings)
