"""Hugging Face ``transformers`` models: causal LMs (per-token top-k log-probabilities, seeded generation) and
sequence classifiers (a classifier :class:`ModelAdapter` over texts).

Loading from a directory is offline and code-free: weights must be safetensors (pickle-based ``.bin`` files are
refused), ``trust_remote_code`` is refused, and so is any config or tokenizer config that names custom code
(``auto_map``) or a ``model_type`` this ``transformers`` does not know. Nothing is fetched from a hub
(``local_files_only=True``).

Models trained in-process are wrapped directly (``HFCausalLM(model, tokenizer)``). The caller's objects are never
changed: evaluation mode is set for the duration of a call and restored; a different device or precision works on
a copy; the tokenizer's padding settings are not touched (batches are padded here, with attention masks).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kdaudit._exceptions import KDAuditError, UnsafeModelFileError, invalid_argument
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._hashing import sha256_file, sha256_state_dict
from kdaudit.models._lm_base import LanguageModel, LMAccess
from kdaudit.models._torch import normalize_precision

__all__ = ["HFCausalLM", "HFSequenceClassifier", "token_bytes", "tokenizer_sha256"]

_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.ckpt.index",
                   "flax_model.msgpack")
_MAX_CONFIG_BYTES = 4 << 20  # a config.json is a few KB; refuse to parse something that is not one
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _torch() -> Any:
    import torch

    return torch


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:  # pragma: no cover - transformers is a declared dependency of the [lm] extra
        raise KDAuditError("Hugging Face models need transformers: pip install 'kdaudit[lm]'") from None
    return transformers


# ---------------------------------------------------------------------------------------------------------------
# loading from a directory: checks before transformers sees the files


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise invalid_argument(what, f"{str(path)!r} of {path.stat().st_size} bytes",
                               f"a JSON file under {_MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_argument(what, f"{str(path)!r} (not valid JSON: {exc})", "a JSON object") from None
    if not isinstance(value, dict):
        raise invalid_argument(what, f"{str(path)!r} holding {type(value).__name__}", "a JSON object")
    return value


def _check_directory(path: Any, *, trust_remote_code: bool) -> tuple[Path, dict[str, Any], str]:
    """Refuse what would run code or touch the network; returns (dir, config, sha256 of the weight files)."""
    if trust_remote_code:
        raise UnsafeModelFileError(
            "argument 'trust_remote_code' got True; expected False: kdaudit never runs code shipped with a model "
            "(audit a model whose architecture ships with transformers, or wrap your own module in HFCausalLM)")
    root = Path(path)
    if not root.is_dir():
        raise invalid_argument("path", str(path), "a local directory holding config.json, safetensors weights "
                                                  "and the tokenizer (nothing is downloaded)")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise invalid_argument("path", str(path), "a directory with a config.json (a Hugging Face model directory)")
    config = _read_json(config_path, "config.json")
    if "auto_map" in config:
        raise UnsafeModelFileError(
            f"model directory {str(root)!r}: config.json names custom code (auto_map = {config['auto_map']!r}); "
            "kdaudit refuses models that need trust_remote_code")
    model_type = config.get("model_type")
    mapping = _transformers().CONFIG_MAPPING
    if not isinstance(model_type, str) or model_type not in mapping:
        raise UnsafeModelFileError(
            f"model directory {str(root)!r}: config.json has model_type {model_type!r}, which this transformers "
            f"({_transformers().__version__}) does not implement; loading it would need custom code, which "
            "kdaudit refuses")
    tok_config = root / "tokenizer_config.json"
    if tok_config.is_file() and "auto_map" in _read_json(tok_config, "tokenizer_config.json"):
        raise UnsafeModelFileError(f"model directory {str(root)!r}: tokenizer_config.json names custom code "
                                   "(auto_map); kdaudit refuses tokenizers that need trust_remote_code")
    single, index = root / "model.safetensors", root / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _read_json(index, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise invalid_argument("model.safetensors.index.json", str(index), "a safetensors index with a weight_map")
        names = sorted(set(map(str, weight_map.values())))
        bad = [n for n in names if Path(n).name != n or not n.endswith(".safetensors")]
        if bad:
            raise invalid_argument("model.safetensors.index.json", bad[0], "shard file names *.safetensors in the "
                                                                           "same directory")
        files = [root / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise invalid_argument("path", str(root), f"every shard of the index (missing {missing[0]!r})")
    else:
        pickled = [n for n in _PICKLE_WEIGHTS if (root / n).exists()]
        if pickled:
            raise UnsafeModelFileError(
                f"model directory {str(root)!r} holds weights as {pickled[0]!r}, a format that can run code when "
                "loaded; kdaudit loads safetensors only (convert with transformers' save_pretrained("
                "..., safe_serialization=True) in an environment you trust)")
        raise invalid_argument("path", str(root), "a directory with model.safetensors or "
                                                  "model.safetensors.index.json")
    if len(files) == 1:
        digest = sha256_file(files[0])
    else:
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}|{sha256_file(f)}\n".encode())
        digest = h.hexdigest()
    return root, config, digest


def _load_directory(path: Any, auto_class: str, *, trust_remote_code: bool, precision: str | None,
                    device: Any) -> tuple[Any, Any, str]:
    root, _, digest = _check_directory(path, trust_remote_code=trust_remote_code)
    tf = _transformers()
    torch = _torch()
    kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        model = getattr(tf, auto_class).from_pretrained(
            str(root), use_safetensors=True,
            dtype=getattr(torch, _DTYPES[normalize_precision(precision)]), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise KDAuditError(f"model directory {str(root)!r} could not be loaded as {auto_class}: {exc}") from None
    model = model.to(_resolve_device(device, torch.device("cpu")))  # our own copy: moved in place, not copied
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(root), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise KDAuditError(f"model directory {str(root)!r}: no usable tokenizer ({exc}); save the tokenizer with "
                           "tokenizer.save_pretrained(path) next to the model") from None
    return model, tokenizer, digest


# ---------------------------------------------------------------------------------------------------------------
# shared pieces


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of what decides how a tokenizer maps text to ids: its vocabulary, merges, normalizer, pre- and
    post-processing (the fast tokenizer's serialized form), its special tokens and its class.

    Two models whose tokenizers hash equal see the same token positions, so their per-token distributions can be
    compared directly.
    """
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # re-serialized with sorted keys: the same tokenizer saved by two versions of `tokenizers` hashes alike
        h.update(json.dumps(json.loads(backend.to_str()), sort_keys=True).encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    h.update(json.dumps(special, sort_keys=True).encode())
    added = sorted((int(i), str(t)) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items())
    h.update(json.dumps(added).encode())
    return h.hexdigest()


def _byte_level_alphabet() -> dict[str, int]:
    """The printable stand-in character of each byte in byte-level BPE vocabularies (GPT-2's convention): bytes
    that are printable Latin-1 stand for themselves, the other 68 are shifted to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    chars = {b: b for b in printable}
    shift = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + shift
            shift += 1
    return {chr(c): b for b, c in chars.items()}


def token_bytes(tokenizer: Any) -> dict[int, bytes]:
    """The bytes each token id stands for (what OpenAI-style APIs report as a token's ``bytes``).

    Byte-level BPE vocabularies map back through their byte alphabet, so pieces of multi-byte characters keep
    their exact bytes; other tokenizers use the UTF-8 of the decoded token.
    """
    vocab = tokenizer.get_vocab()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and type(backend.decoder).__name__ == "ByteLevel"
    alphabet = _byte_level_alphabet() if byte_level else {}
    special = set(getattr(tokenizer, "all_special_tokens", []))
    out: dict[int, bytes] = {}
    for piece, tid in vocab.items():
        if byte_level and piece not in special and all(ch in alphabet for ch in piece):
            out[int(tid)] = bytes(alphabet[ch] for ch in piece)
        else:
            out[int(tid)] = tokenizer.decode([tid]).encode("utf-8")
    return out


def _resolve_device(device: Any, current: Any) -> Any:
    torch = _torch()
    if device is None:
        return current
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise invalid_argument("device", device, '"cpu", "cuda", "cuda:N", "auto" or None') from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise invalid_argument("device", device, "a device this machine has (no CUDA device is available)")
    return dev


def _placed(model: Any, *, device: Any, precision: str | None) -> tuple[Any, Any, str]:
    """(the model at ``device`` and ``precision``, that device, that precision's name); None keeps the model's own.
    A change works on a copy: ``Module.to`` changes the module in place, and the caller's model stays as it was."""
    torch = _torch()
    param = next(model.parameters(), None)
    current_device = param.device if param is not None else torch.device("cpu")
    current_dtype = param.dtype if param is not None else torch.float32
    target_device = _resolve_device(device, current_device)
    target_dtype = current_dtype if precision is None else getattr(torch, _DTYPES[normalize_precision(precision)])
    if target_device != current_device or target_dtype != current_dtype:
        model = copy.deepcopy(model).to(device=target_device, dtype=target_dtype)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(target_dtype, str(target_dtype))
    return model, target_device, name


class _Transformer:
    """The parts the causal LM and the classifier share: one model and its tokenizer, device and precision,
    fingerprints, encoding and batching."""

    def _setup(self, model: Any, tokenizer: Any, *, device: Any, precision: str | None, batch_size: int,
               max_length: int | None, truncation: bool) -> None:
        torch = _torch()
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise invalid_argument("model", type(model).__name__, "a transformers PreTrainedModel")
        if tokenizer is None or not callable(getattr(tokenizer, "__call__", None)) or not hasattr(tokenizer, "decode"):
            raise invalid_argument("tokenizer", type(tokenizer).__name__, "a transformers tokenizer")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise invalid_argument("batch_size", batch_size, "an integer >= 1")
        self.model, self.device, self.precision = _placed(model, device=device, precision=precision)
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        limit = _model_max_length(model)
        if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 2):
            raise invalid_argument("max_length", max_length, "None or an integer >= 2")
        self.max_length = int(max_length) if max_length is not None else limit
        self.truncation = bool(truncation)
        self._sha: tuple[Any, str] | None = None
        self._tok_sha: str | None = None

    def configured(self, *, device: Any, precision: str | None) -> Any:
        """This model at ``device`` and ``precision`` (None keeps its own): ``self`` when nothing changes, else a
        new adapter over a converted copy of the weights (same tokenizer and settings); this one is left as it was.
        """
        model, target_device, target_precision = _placed(self.model, device=device, precision=precision)
        if model is self.model:
            return self
        new = copy.copy(self)
        new.model, new.device, new.precision = model, target_device, target_precision
        new._sha = None  # the weights as the copy runs them
        return new

    def fingerprint(self) -> str:
        """sha256 of the weights as this adapter runs them; recomputed only when a parameter changed in place
        (each in-place update bumps the tensor's version counter), so a model trained after wrapping is
        re-hashed, and an unchanged one is hashed once."""
        state = tuple((t.data_ptr(), t._version) for t in self.model.state_dict().values())
        if self._sha is None or self._sha[0] != state:
            self._sha = (state, sha256_state_dict(self.model.state_dict()))
        return self._sha[1]

    def tokenizer_fingerprint(self) -> str:
        if self._tok_sha is None:
            self._tok_sha = tokenizer_sha256(self.tokenizer)
        return self._tok_sha

    def n_parameters(self) -> int | None:
        return int(sum(p.numel() for p in self.model.parameters()))

    def size_bytes(self) -> int | None:
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))

    def _encode(self, texts: Sequence[str], ids: Sequence[Any], what: str) -> list[list[int]]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise invalid_argument(what, type(texts).__name__, "a sequence of str")
        if len(ids) != len(texts):
            raise invalid_argument("ids", f"{len(ids)} ids", f"{len(texts)} (one per text)")
        encoded = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"] if len(texts) else []
        out = []
        for i, seq in enumerate(encoded):
            if self.max_length is not None and len(seq) > self.max_length:
                if not self.truncation:
                    raise invalid_argument(
                        what, f"text {ids[i]!r} of {len(seq)} tokens",
                        f"at most max_length={self.max_length} tokens (or pass truncation=True to keep the first "
                        f"{self.max_length})")
                seq = seq[:self.max_length]
            out.append(list(seq))
        return out

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        torch = _torch()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_training:
                self.model.train()

    def _pad_id(self) -> int:
        for value in (getattr(self.tokenizer, "pad_token_id", None), getattr(self.model.config, "pad_token_id", None),
                      getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(value, int):
                return value
        return 0  # masked out by the attention mask; any id in the vocabulary will do

    def _batch(self, seqs: list[list[int]], *, left: bool, pad_id: int) -> tuple[Any, Any]:
        """(input_ids, attention_mask) on the model's device, padded on the left or the right."""
        torch = _torch()
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for r, s in enumerate(seqs):
            if left:
                ids[r, width - len(s):] = s
                mask[r, width - len(s):] = 1
            else:
                ids[r, :len(s)] = s
                mask[r, :len(s)] = 1
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)


def _model_max_length(model: Any) -> int | None:
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _batches(order: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), size):
        yield order[start:start + size]


def _row_seed(seed: int, sample_id: Any) -> int:
    # one generator per prompt, seeded by (seed, id): a sampled continuation does not depend on the batch size or
    # on which other prompts share its batch
    digest = hashlib.sha256(f"{int(seed)}|{sample_id!s}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _GumbelSampler:
    """A logits processor that turns greedy decoding into sampling at ``temperature`` with one random stream per
    row: argmax(logits / T + Gumbel noise) is a draw from softmax(logits / T) (the Gumbel-max trick)."""

    def __init__(self, seeds: list[int], temperature: float, device: Any) -> None:
        torch = _torch()
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = float(temperature)
        self.device = device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = _torch()
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        uniform = uniform.clamp_(min=1e-300)
        gumbel = (-torch.log(-torch.log(uniform))).to(device=scores.device, dtype=torch.float32)
        return scores.float() / self.temperature + gumbel


# ---------------------------------------------------------------------------------------------------------------


class HFCausalLM(_Transformer, LanguageModel):
    """A ``transformers`` causal language model (``AutoModelForCausalLM``) and its tokenizer.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM (its forward returns ``logits`` of shape (batch, length, vocab)). Use
        :meth:`from_pretrained` for a model directory on disk.
    tokenizer : transformers tokenizer
    name : str
    device : {None, "cpu", "cuda", "cuda:N", "auto"}
        None keeps the model where it is. Another device (or precision) works on a copy of ``model``.
    precision : {None, "fp32", "bf16", "fp16"}
        Weights' dtype; None keeps the model's. Log-probabilities are always computed in float32.
    batch_size : int
        Texts per forward pass. Scoring sorts texts by length before batching (less padding); results are
        returned in the caller's order.
    max_length : int, optional
        Most tokens per text (default: the model's position limit).
    truncation : bool
        Keep the first ``max_length`` tokens of a longer text instead of raising.

    Notes
    -----
    Scoring pads on the right with an attention mask (positions then match the unpadded text); generation pads
    on the left (transformers derives position ids from the mask). Tokens are added as the tokenizer adds them
    by default (a BOS token for Llama-style tokenizers, nothing for GPT-2's).
    """

    kind = "huggingface"
    access = LMAccess.LOGPROBS

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "lm", device: Any = None,
                 precision: str | None = None, batch_size: int = 8, max_length: int | None = None,
                 truncation: bool = False) -> None:
        self._setup(model, tokenizer, device=device, precision=precision, batch_size=batch_size,
                    max_length=max_length, truncation=truncation)
        self.name = str(name)
        self.query_count = 0
        self.token_count = 0
        self.file_sha256 = None

    def __repr__(self) -> str:
        return (f"HFCausalLM(name={self.name!r}, model={type(self.model).__name__}, device={str(self.device)!r}, "
                f"precision={self.precision!r})")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, name: str | None = None, device: Any = None,
                        precision: str | None = None, batch_size: int = 8, max_length: int | None = None,
                        truncation: bool = False, trust_remote_code: bool = False) -> "HFCausalLM":
        """Load a causal LM and its tokenizer from a local directory (safetensors only, no custom code, offline).

        Raises :class:`~kdaudit.UnsafeModelFileError` for pickle-based weights, ``trust_remote_code=True`` or a
        config that needs custom code.
        """
        model, tokenizer, digest = _load_directory(path, "AutoModelForCausalLM", trust_remote_code=trust_remote_code,
                                                   precision=precision, device=device)
        lm = cls(model, tokenizer, name=name or Path(path).name, batch_size=batch_size,
                 max_length=max_length, truncation=truncation)
        lm.file_sha256 = digest
        return lm

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0]) if self.model.get_output_embeddings() \
            is not None else int(self.model.config.vocab_size)

    def _logits(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def score(self, texts: Sequence[str], ids: Sequence[Any], *, top_k: int) -> Any:
        """Teacher-forced top-k next-token log-probabilities of each text (see :class:`kdaudit.harness.TokenTopK`).

        Position ``j`` of a text predicts its token ``j + 1``; a text of L tokens gives L - 1 positions.
        """
        from kdaudit._lm_outputs import MAX_TOP_K, TokenTopK

        torch = _torch()
        if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= min(MAX_TOP_K, self.vocab_size):
            raise invalid_argument("top_k", top_k, f"an integer in [1, {min(MAX_TOP_K, self.vocab_size)}]")
        ids = list(ids)
        seqs = self._encode(texts, ids, "texts")
        n_pos_each = np.array([max(len(s) - 1, 0) for s in seqs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_pos_each)]).astype(np.int64)
        n_pos = int(offsets[-1])
        top_ids = np.zeros((n_pos, top_k), dtype=np.int32)
        top_lp = np.zeros((n_pos, top_k), dtype=np.float32)
        target_ids = np.zeros(n_pos, dtype=np.int32)
        target_lp = np.zeros(n_pos, dtype=np.float32)
        order = np.argsort(-n_pos_each, kind="stable")
        order = order[n_pos_each[order] > 0]
        pad_id = self._pad_id()
        with self._inference():
            for rows in _batches(order, self.batch_size):
                input_ids, mask = self._batch([seqs[r] for r in rows], left=False, pad_id=pad_id)
                logits = self._logits(input_ids, mask)
                valid = mask[:, 1:].bool()  # position j is scored when token j + 1 is real
                logprobs = torch.log_softmax(logits[:, :-1][valid].float(), dim=-1)
                targets = input_ids[:, 1:][valid]
                values, indices = torch.topk(logprobs, top_k, dim=-1)
                actual = logprobs.gather(1, targets[:, None])[:, 0]
                # boolean indexing is row-major: each text's positions come out contiguous and in order
                dest = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows])
                top_ids[dest] = indices.cpu().numpy()
                top_lp[dest] = values.cpu().numpy()
                target_ids[dest] = targets.cpu().numpy()
                target_lp[dest] = actual.cpu().numpy()
        self.query_count += len(seqs)
        self.token_count += int(sum(len(s) for s in seqs))
        return TokenTopK(name=self.name, text_ids=np.asarray(ids), offsets=offsets, top_ids=top_ids,
                         top_logprobs=top_lp, target_ids=target_ids, target_logprob=target_lp,
                         tokenizer_sha256=self.tokenizer_fingerprint(),
                         meta={"precision": self.precision, "device": self.device.type, "top_k": int(top_k)})

    def generate(self, prompts: Sequence[str], ids: Sequence[Any], *, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0) -> Any:
        """Continuations of each prompt: greedy, or sampled at ``temperature`` with one seeded stream per prompt
        (the same prompt, id and seed give the same continuation whatever the batch).

        ``token_logprobs`` holds the model's own (temperature 1) log-probability of each generated token, up to
        and including an end-of-sequence token.
        """
        from kdaudit._lm_outputs import Generations

        torch = _torch()
        tf = _transformers()
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise invalid_argument("max_new_tokens", max_new_tokens, "an integer >= 1")
        if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise invalid_argument("temperature", temperature, "a number > 0 when sampling")
        ids = list(ids)
        seqs = self._encode(prompts, ids, "prompts")
        bos = getattr(self.tokenizer, "bos_token_id", None)
        for i, s in enumerate(seqs):
            if not s:
                if not isinstance(bos, int):
                    raise invalid_argument("prompts", f"prompt {ids[i]!r} with no tokens",
                                           "prompts of at least one token (this tokenizer has no BOS token)")
                s.append(bos)
        if self.max_length is not None:
            longest = max((len(s) for s in seqs), default=0)
            if longest + max_new_tokens > self.max_length:
                raise invalid_argument("max_new_tokens", max_new_tokens,
                                       f"at most {self.max_length - longest} (the longest prompt has {longest} "
                                       f"tokens; the model reads at most {self.max_length})")
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if not isinstance(eos, int):
            eos = getattr(self.model.config, "eos_token_id", None)
        pad_id = self._pad_id()
        # an explicit configuration: a generation_config.json shipped with the model (sampling, top-p, repetition
        # penalties) must not change what an audit measures
        config = tf.GenerationConfig(max_new_tokens=int(max_new_tokens), min_new_tokens=0, do_sample=False,
                                     num_beams=1, pad_token_id=pad_id, eos_token_id=eos,
                                     return_dict_in_generate=True, output_logits=True)
        texts: list[str] = [""] * len(seqs)
        logprobs: list[np.ndarray] = [np.zeros(0, np.float32)] * len(seqs)
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        n_tokens = 0
        with self._inference():
            for rows in _batches(order, self.batch_size):
                input_ids, mask = self._batch([seqs[r] for r in rows], left=True, pad_id=pad_id)
                processors = tf.LogitsProcessorList()
                if do_sample:
                    processors.append(_GumbelSampler([_row_seed(seed, ids[r]) for r in rows], temperature,
                                                     self.device))
                out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                          logits_processor=processors)
                new = out.sequences[:, input_ids.shape[1]:]
                step_lp = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.logits], dim=1)
                chosen = step_lp.gather(2, new[:, :, None])[:, :, 0].cpu().numpy()
                new_np = new.cpu().numpy()
                for j, r in enumerate(rows):
                    toks = new_np[j]
                    stop = len(toks)
                    if eos is not None:
                        hits = np.flatnonzero(toks == eos)
                        stop = int(hits[0]) + 1 if len(hits) else stop
                    texts[r] = self.tokenizer.decode(toks[:stop], skip_special_tokens=True)
                    logprobs[r] = chosen[j, :stop].astype(np.float32)
                    n_tokens += stop + len(seqs[r])
        self.query_count += len(seqs)
        self.token_count += n_tokens
        settings = {"do_sample": bool(do_sample), "max_new_tokens": int(max_new_tokens),
                    "temperature": float(temperature) if do_sample else 0.0, "seed": int(seed)}
        return Generations(name=self.name, text_ids=np.asarray(ids), texts=tuple(texts), settings=settings,
                           token_logprobs=tuple(logprobs))


class HFSequenceClassifier(_Transformer, ModelAdapter):
    """A ``transformers`` sequence classifier (``AutoModelForSequenceClassification``) over texts, as a classifier
    :class:`ModelAdapter`: audit it with ``AuditData(X=array_of_strings, ...)`` like any other classifier.

    Parameters are those of :class:`HFCausalLM`. ``predict`` returns (n, n_classes) float32 logits. Class names are
    the config's ``id2label`` unless they are transformers' placeholders (``LABEL_0``...).

    Models that pool the last real token (GPT-2 style) find it through ``config.pad_token_id``; when the config
    has none, texts are batched only with texts of the same length, so no padding is ever needed.
    """

    kind = "huggingface"
    access = Access.PROBABILITIES
    output = "logits"

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "classifier", device: Any = None,
                 precision: str | None = None, batch_size: int = 32, max_length: int | None = None,
                 truncation: bool = False) -> None:
        self._setup(model, tokenizer, device=device, precision=precision, batch_size=batch_size,
                    max_length=max_length, truncation=truncation)
        self.name = str(name)
        self.n_classes = int(model.config.num_labels)
        labels = [str(model.config.id2label.get(i, i)) for i in range(self.n_classes)] \
            if getattr(model.config, "id2label", None) else []
        self.classes = None if not labels or all(lab == f"LABEL_{i}" for i, lab in enumerate(labels)) \
            else tuple(labels)
        self.query_count = 0
        self.file_sha256 = None

    def __repr__(self) -> str:
        return f"HFSequenceClassifier(name={self.name!r}, model={type(self.model).__name__}, n_classes={self.n_classes})"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, name: str | None = None, device: Any = None,
                        precision: str | None = None, batch_size: int = 32, max_length: int | None = None,
                        truncation: bool = False, trust_remote_code: bool = False) -> "HFSequenceClassifier":
        """Load a sequence classifier and its tokenizer from a local directory (safetensors only, offline)."""
        model, tokenizer, digest = _load_directory(path, "AutoModelForSequenceClassification",
                                                   trust_remote_code=trust_remote_code, precision=precision,
                                                   device=device)
        clf = cls(model, tokenizer, name=name or Path(path).name, batch_size=batch_size,
                  max_length=max_length, truncation=truncation)
        clf.file_sha256 = digest
        return clf

    def predict(self, X: Any) -> np.ndarray:
        texts = [str(x) for x in np.asarray(X, dtype=object).reshape(-1)]
        seqs = self._encode(texts, list(range(len(texts))), "X")
        out = np.zeros((len(seqs), self.n_classes), dtype=np.float32)
        lengths = np.array([len(s) for s in seqs])
        if (lengths == 0).any():
            raise invalid_argument("X", f"an empty text at row {int(np.flatnonzero(lengths == 0)[0])}",
                                   "texts of at least one token")
        order = np.argsort(-lengths, kind="stable")
        pad_id = getattr(self.model.config, "pad_token_id", None)
        if isinstance(pad_id, int):
            groups = list(_batches(order, self.batch_size))
        else:
            groups = [chunk for length in np.unique(lengths)[::-1]
                      for chunk in _batches(order[lengths[order] == length], self.batch_size)]
            pad_id = 0
        with self._inference():
            for rows in groups:
                input_ids, mask = self._batch([seqs[r] for r in rows], left=False, pad_id=pad_id)
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits
                out[rows] = logits.float().cpu().numpy()
        self.query_count += len(seqs)
        return out
