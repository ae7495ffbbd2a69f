"""kdaudit.sections: what an audit computes, one section at a time, and the registry plugins join.

A section declares its name and order, its options (one schema for the API, the config file and the CLI), what it
needs from the models (output kinds, least access, labels, sensitive features, references), an accumulator
factory, and the tidy rows its result reads as. See :class:`Section` and ARCHITECTURE.md ("Adding a section").
"""

from kdaudit.sections._base import (
    DATA_PARTS,
    KIND_OF_ACCESS,
    ModelContext,
    ModelResults,
    Needs,
    Option,
    Row,
    Section,
    SectionInputs,
)
from kdaudit.sections._lm import LMOutputs, LMPair, LMSection
from kdaudit.sections._registry import (
    ENTRY_POINT_GROUP,
    check_section_options,
    definitions_of,
    get_section,
    registry,
    section_names,
)

__all__ = [
    "DATA_PARTS",
    "ENTRY_POINT_GROUP",
    "KIND_OF_ACCESS",
    "LMOutputs",
    "LMPair",
    "LMSection",
    "ModelContext",
    "ModelResults",
    "Needs",
    "Option",
    "Row",
    "Section",
    "SectionInputs",
    "check_section_options",
    "definitions_of",
    "get_section",
    "registry",
    "section_names",
]
