"""A real text corpus that works offline: the docstrings of the Python standard library's own source files.

Every Python installation carries its standard library as ``.py`` source. :func:`load_stdlib_corpus` reads a
fixed, sorted list of those files (parsed with :mod:`ast`, never imported or run), takes the docstring of every
module, class and function in source order, and returns them as documents with stable ids. The text is English
prose about programming written by the CPython developers: enough (about 2,000 docstrings, 480 KB) to train a small
GPT-style model on two CPU cores in minutes.

Source and licence: CPython's standard library, Copyright (c) 2001- Python Software Foundation, distributed under
the PSF License Agreement (https://docs.python.org/3/license.html), which permits use, copying and derivative
works. The text differs between Python versions, so each corpus records the Python version and the sha256 of its
files and of its text; ``kdaudit/data/files/DATA.md`` lists the sha256 for the version the bundled reports used.

From the corpus: continuation prompts with reference continuations (:func:`continuation_prompts`), a
multiple-choice task with right answers (:func:`docstring_choice_task`: which summary line belongs to this
function), and templated prompts with a group column (:func:`templated_prompts`), plus a deterministic byte-level
BPE tokenizer trained on it (:func:`train_tokenizer`).
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from kdaudit._exceptions import KDAuditError, invalid_argument
from kdaudit.data._prompts import PromptSet

__all__ = [
    "STDLIB_MODULES",
    "TextCorpus",
    "continuation_prompts",
    "docstring_choice_task",
    "load_stdlib_corpus",
    "templated_prompts",
    "train_tokenizer",
]

# (path under the stdlib directory without ".py", area): modules present in every CPython >= 3.10, grouped by
# what they are for (the area is the group column of the derived tasks). Sorted by path.
STDLIB_MODULES: tuple[tuple[str, str], ...] = (
    ("argparse", "system"), ("ast", "language"), ("base64", "data"), ("bisect", "algorithms"),
    ("calendar", "time"), ("collections/__init__", "algorithms"), ("colorsys", "data"),
    ("configparser", "data"), ("contextlib", "language"), ("copy", "language"), ("csv", "data"),
    ("dataclasses", "language"), ("datetime", "time"), ("difflib", "text"), ("enum", "language"),
    ("fnmatch", "text"), ("fractions", "numeric"), ("functools", "language"), ("getopt", "system"),
    ("glob", "system"), ("gzip", "data"), ("hashlib", "data"), ("heapq", "algorithms"), ("hmac", "data"),
    ("html/__init__", "text"), ("inspect", "language"), ("ipaddress", "network"), ("json/__init__", "data"),
    ("json/decoder", "data"), ("json/encoder", "data"), ("locale", "text"), ("logging/__init__", "system"),
    ("mimetypes", "network"), ("numbers", "numeric"), ("operator", "language"), ("optparse", "system"),
    ("os", "system"), ("pathlib", "system"), ("pickle", "data"), ("platform", "system"), ("pprint", "text"),
    ("queue", "algorithms"), ("random", "numeric"), ("re/__init__", "text"), ("sched", "time"),
    ("secrets", "numeric"), ("shlex", "text"), ("shutil", "system"), ("socket", "network"),
    ("statistics", "numeric"), ("string", "text"), ("struct", "data"), ("subprocess", "system"),
    ("tarfile", "data"), ("tempfile", "system"), ("textwrap", "text"), ("threading", "system"),
    ("timeit", "time"), ("tokenize", "language"), ("traceback", "language"), ("typing", "language"),
    ("urllib/parse", "network"), ("uuid", "data"), ("warnings", "language"), ("weakref", "language"),
    ("zipfile", "data"),
)

EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class Document:
    """One docstring: ``id`` is ``"<module path>:<qualified name>"`` (``"<module path>:"`` for the module's own)."""

    id: str
    text: str
    module: str
    area: str
    kind: str  # "module", "class" or "function"
    name: str
    signature: str  # "def name(args):" for functions, "class Name:" for classes, "" for modules


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """Documents in a fixed order, with what identifies them."""

    documents: tuple[Document, ...]
    name: str
    python_version: str
    files: tuple[tuple[str, str], ...] = field(default=())  # (path, sha256) of each source file
    license: str = "PSF License Agreement (https://docs.python.org/3/license.html)"

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.documents]

    def sha256(self) -> str:
        """sha256 of the corpus' text (ids and texts, in order)."""
        h = hashlib.sha256()
        for d in self.documents:
            h.update(f"{d.id}\x00{d.text}\x00".encode())
        return h.hexdigest()

    def files_sha256(self) -> str:
        """sha256 over the source files read (one ``"<path> <sha256>\\n"`` line each, in order)."""
        return hashlib.sha256("".join(f"{p} {h}\n" for p, h in self.files).encode()).hexdigest()

    def split(self, *, heldout_fraction: float = 0.2, salt: str = "kdaudit") -> tuple["TextCorpus", "TextCorpus"]:
        """(train, held-out): each document goes to one side by a hash of its id, so the split does not move when
        documents are added or removed elsewhere."""
        if not 0 < heldout_fraction < 1:
            raise invalid_argument("heldout_fraction", heldout_fraction, "a number in (0, 1)")
        held = [_unit_hash(f"{salt}|{d.id}") < heldout_fraction for d in self.documents]
        pick = lambda keep: TextCorpus(  # noqa: E731
            documents=tuple(d for d, h in zip(self.documents, held) if h == keep), name=self.name,
            python_version=self.python_version, files=self.files, license=self.license)
        return pick(False), pick(True)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "python_version": self.python_version, "n_documents": len(self.documents),
                "n_chars": int(sum(len(d.text) for d in self.documents)), "sha256": self.sha256(),
                "files_sha256": self.files_sha256(),
                "license": self.license}


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2.0 ** 64


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str, ast.AST]]:
    """(qualified name, kind, signature, node) of each class and function with a docstring, in source order."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qual = f"{prefix}{child.name}"
            if isinstance(child, ast.ClassDef):
                kind, sig = "class", f"class {child.name}:"
            else:
                kind, sig = "function", f"def {child.name}({ast.unparse(child.args)}):"
            yield qual, kind, sig, child
            yield from _walk(child, qual + ".")


def load_stdlib_corpus(*, modules: Sequence[tuple[str, str]] | None = None, min_chars: int = 40,
                       stdlib_dir: str | Path | None = None) -> TextCorpus:
    """The docstrings of a fixed list of standard-library modules, in a fixed order.

    Parameters
    ----------
    modules : sequence of (path, area), optional
        Paths under the standard library directory without ``.py`` (default :data:`STDLIB_MODULES`), each with
        an area label (the group column of derived tasks). Read in sorted order.
    min_chars : int
        Docstrings shorter than this are left out.
    stdlib_dir : path, optional
        Where the standard library lives (default: this Python's).

    Returns
    -------
    TextCorpus
        Deterministic for a given Python version: ``corpus.sha256()`` and ``corpus.files`` identify it.

    Notes
    -----
    Source: CPython's standard library, (c) Python Software Foundation, PSF License Agreement. Files are parsed
    with :mod:`ast` and never imported.
    """
    mods = sorted(STDLIB_MODULES if modules is None else modules)
    root = Path(stdlib_dir) if stdlib_dir is not None else _stdlib_dir()
    docs: list[Document] = []
    files: list[tuple[str, str]] = []
    for path, area in mods:
        file = root / f"{path}.py"
        if not file.is_file():
            raise KDAuditError(f"the standard library file {str(file)!r} is missing; this Python "
                               f"({sys.version.split()[0]}) does not ship the module {path!r} as source")
        raw = file.read_bytes()
        files.append((f"{path}.py", hashlib.sha256(raw).hexdigest()))
        tree = ast.parse(raw, filename=str(file))
        module = path.removesuffix("/__init__").replace("/", ".")
        entries = [("", "module", "", tree)] + list(_walk(tree, ""))
        for qual, kind, sig, node in entries:
            text = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
            if text and len(text) >= min_chars:
                docs.append(Document(id=f"{module}:{qual}", text=text, module=module, area=area, kind=kind,
                                     name=qual.rsplit(".", 1)[-1] if qual else module, signature=sig))
    seen: set[str] = set()
    unique = []
    for d in docs:  # a name defined twice (platform-dependent branches) keeps its first docstring
        if d.id not in seen:
            seen.add(d.id)
            unique.append(d)
    return TextCorpus(documents=tuple(unique), name="python-stdlib-docstrings",
                      python_version=".".join(map(str, sys.version_info[:3])), files=tuple(files))


def train_tokenizer(texts: Sequence[str], *, vocab_size: int = 1024, min_frequency: int = 2) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic for the same texts), as a
    ``transformers.PreTrainedTokenizerFast`` with ``<|endoftext|>`` as BOS, EOS and padding token.

    Byte-level: any text, in any script, encodes without an unknown token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 260:
        raise invalid_argument("vocab_size", vocab_size, "an integer >= 260 (256 bytes, the special token, merges)")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise invalid_argument("texts", type(texts).__name__, "a non-empty sequence of str")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                  special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, model_max_length=1 << 30)


def _order(ids: Sequence[str], seed: int) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}|{ids[i]}".encode()).digest())


def _cut(text: str, at: int) -> int:
    """The last whitespace at or before ``at`` (so prompts end between words), or ``at``."""
    space = text.rfind(" ", 0, at + 1)
    newline = text.rfind("\n", 0, at + 1)
    cut = max(space, newline)
    return cut if cut > at // 2 else at


def continuation_prompts(corpus: TextCorpus, *, n: int = 200, prompt_chars: int = 120, reference_chars: int = 120,
                         seed: int = 0) -> PromptSet:
    """``n`` prompts (the beginning of a docstring) with the docstring's next words as reference continuation.

    Documents long enough are drawn in an order fixed by ``seed``; prompts end at a word boundary and the
    reference starts there (it begins with the whitespace that separates them). Group column ``area``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise invalid_argument("n", n, "an integer >= 1")
    if prompt_chars < 8 or reference_chars < 8:
        raise invalid_argument("prompt_chars/reference_chars", (prompt_chars, reference_chars), "integers >= 8")
    eligible = [d for d in corpus.documents if len(d.text) >= prompt_chars + reference_chars]
    picked = [eligible[i] for i in _order([d.id for d in eligible], seed)[:n]]
    if len(picked) < n:
        raise invalid_argument("n", n, f"at most {len(picked)} (documents of at least "
                                       f"{prompt_chars + reference_chars} characters in this corpus)")
    prompts, refs = [], []
    for d in picked:
        cut = _cut(d.text, prompt_chars)
        prompts.append(d.text[:cut])
        end = _cut(d.text, cut + reference_chars)
        refs.append(d.text[cut:end if end > cut else cut + reference_chars])
    return PromptSet(prompts=prompts, ids=[d.id for d in picked], references=refs,
                     groups=pd.DataFrame({"area": [d.area for d in picked]}), name="stdlib-continuations",
                     source=f"{corpus.name} (Python {corpus.python_version}, sha256 {corpus.sha256()[:16]})")


def _summary(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def docstring_choice_task(corpus: TextCorpus, *, n: int = 200, n_choices: int = 4, seed: int = 0) -> PromptSet:
    """A multiple-choice task with right answers: given a function's signature, which summary line is its own?

    The prompt is ``def name(args):\\n    \"\"\"`` and the choices are ``n_choices`` docstring summary lines, one
    the function's own and the rest drawn from other functions (distinct summaries), in an order fixed by
    ``seed``. Scored by log-likelihood of each choice after the prompt, as evaluation harnesses do. Group column
    ``area``.
    """
    if not isinstance(n_choices, (int, np.integer)) or n_choices < 2:
        raise invalid_argument("n_choices", n_choices, "an integer >= 2")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise invalid_argument("n", n, "an integer >= 1")
    funcs = [d for d in corpus.documents if d.kind == "function" and 12 <= len(_summary(d.text)) <= 200]
    by_summary: dict[str, Document] = {}
    for d in funcs:  # a summary shared by two functions cannot have one right owner
        by_summary.setdefault(_summary(d.text), d)
    dup = {s for s in by_summary if sum(_summary(d.text) == s for d in funcs) > 1}
    funcs = [d for d in funcs if _summary(d.text) not in dup]
    if len(funcs) < max(n, n_choices):
        raise invalid_argument("n", n, f"at most {len(funcs)} (functions with a unique summary line)")
    order = _order([d.id for d in funcs], seed)
    rng = np.random.default_rng(seed)
    prompts, choices, answers, ids, areas = [], [], [], [], []
    pool = [_summary(d.text) for d in funcs]
    for i in order[:n]:
        d = funcs[i]
        right = pool[i]
        others = [j for j in rng.choice(len(pool), size=min(len(pool), 4 * n_choices), replace=False)
                  if pool[j] != right]
        wrong = list(dict.fromkeys(pool[j] for j in others))[:n_choices - 1]
        options = wrong + [right]
        perm = rng.permutation(len(options))
        options = [options[p] for p in perm]
        prompts.append(f'{d.signature}\n    """')
        choices.append(tuple(options))
        answers.append(options.index(right))
        ids.append(d.id)
        areas.append(d.area)
    return PromptSet(prompts=prompts, ids=ids, choices=choices, answers=answers,
                     groups=pd.DataFrame({"area": areas}), name="stdlib-docstring-choice",
                     source=f"{corpus.name} (Python {corpus.python_version}, sha256 {corpus.sha256()[:16]})")


def templated_prompts(templates: Sequence[str], fillers: Mapping[str, Sequence[str]], *, group: str = "group",
                      slot: str = "x", name: str = "templated") -> PromptSet:
    """Every template filled with every filler of every group: prompts that differ only in the filler, with the
    filler's group as a prompt-level group column (bias transfer: does the student treat the groups as the
    teacher does?).

    Parameters
    ----------
    templates : sequence of str
        Each holds ``{x}`` (or ``{<slot>}``) once or more, e.g. ``"The {x} module is used to"``.
    fillers : mapping of group -> sequence of str
    group : str
        Name of the group column.

    Examples
    --------
    >>> ps = templated_prompts(["import {x}  # for"], {"text": ["re", "textwrap"], "numeric": ["math"]},
    ...                        group="area")
    >>> ps.prompts
    ('import re  # for', 'import textwrap  # for', 'import math  # for')
    >>> ps.groups["area"].tolist()
    ['text', 'text', 'numeric']
    """
    templates = list(templates)
    if not templates or not all(isinstance(t, str) and "{" + slot + "}" in t for t in templates):
        raise invalid_argument("templates", templates[:3], f"a non-empty list of str, each holding {{{slot}}}")
    if not fillers or not all(isinstance(v, (list, tuple)) and v for v in fillers.values()):
        raise invalid_argument("fillers", dict(fillers) if fillers else fillers,
                               "a mapping of group name -> non-empty list of fillers")
    prompts, ids, groups = [], [], []
    for t_index, template in enumerate(templates):
        for g, values in fillers.items():
            for v in values:
                prompts.append(template.replace("{" + slot + "}", str(v)))
                ids.append(f"t{t_index}:{g}:{v}")
                groups.append(str(g))
    return PromptSet(prompts=prompts, ids=ids, groups=pd.DataFrame({group: groups}), name=name,
                     source="templated")
