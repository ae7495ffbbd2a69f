"""A language model behind an OpenAI-compatible HTTP endpoint (``/v1/completions``, ``/v1/chat/completions``).

What it reveals decides what can be audited: with ``access="logprobs"`` a text is scored teacher-forced through
``/v1/completions`` with ``echo=True, max_tokens=0, logprobs=k`` (servers such as vLLM and llama.cpp's support it;
OpenAI's hosted models no longer do), and generations carry per-token log-probabilities; with ``access="text"``
only generated text is read.

Every query goes through a :class:`~kdaudit.models.QueryJournal` (write-ahead, fsynced): a query is recorded
before it is sent and its answer after, so a prompt answered is never paid for twice, a killed run resumes where
it stopped (at most the calls in flight at the kill are sent again), and the budget in prompts holds across
crashes. Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff,
honouring ``Retry-After``; a per-call timeout and an overall deadline bound the time spent.

The API key is read from an environment variable the caller names (``OPENAI_API_KEY`` by default) at the moment a
request is sent. It is never stored on the object, and never written to the journal, a result, a log, a repr or an
error message (any text that reaches an error is scrubbed of it).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kdaudit._exceptions import KDAuditError, QueryBudgetExceededError, invalid_argument
from kdaudit.models._journal import QueryJournal
from kdaudit.models._lm_base import LanguageModel, LMAccess

__all__ = ["EndpointError", "OpenAIEndpointModel"]

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_MAX_ERROR_BODY = 300


class EndpointError(KDAuditError):
    """The endpoint refused a request, or kept failing after every retry; ``status`` is the last HTTP status
    (None for a timeout or a connection failure)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a declared dependency of the [lm] extra
        raise KDAuditError("OpenAI-compatible endpoints need httpx: pip install 'kdaudit[lm]'") from None
    return httpx


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)


def _token_to_bytes(token: str) -> bytes:
    """A token string as APIs report it, to its bytes: ``"bytes:\\xe2\\x80"`` (OpenAI's form for a piece of a
    multi-byte character) or plain text."""
    if token.startswith("bytes:"):
        body = token[len("bytes:"):]
        try:
            return body.encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError):
            return body.encode("utf-8")
    return token.encode("utf-8")


def _token_id_from_hash(token: str) -> int:
    # without the endpoint's tokenizer a token string gets a stable id of its own (the same string gets the same
    # id in every run and for every endpoint), so two endpoints can still be compared token by token
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF


class OpenAIEndpointModel(LanguageModel):
    """A model served through an OpenAI-compatible API.

    Parameters
    ----------
    base_url : str
        The API root, e.g. ``"http://127.0.0.1:8000/v1"`` or ``"https://api.openai.com/v1"``.
    model : str
        The ``model`` field sent with every request.
    name : str, optional
        The model's name in the audit (default ``model``).
    api : {"completions", "chat"}
        Which route generates text. Teacher-forced scoring always uses ``/completions`` (with ``echo``).
    access : {"logprobs", "text"}
        ``"logprobs"``: the endpoint returns per-token log-probabilities (``logprobs``/``top_logprobs``);
        ``"text"``: only generated text is read (:meth:`score` refuses).
    max_top_k : int
        The most log-probabilities per position the endpoint returns (OpenAI: 20 for chat, 5 for completions).
    tokenizer : transformers tokenizer, optional
        The endpoint's tokenizer, when known: token strings map back to its ids and its fingerprint makes
        per-token comparisons with local models of the same tokenizer possible. Without it, token ids are a
        stable hash of the token string and the tokenizer fingerprint is unknown (text-level comparisons only).
    api_key_env : str or None
        Environment variable holding the API key (sent as ``Authorization: Bearer``); None sends no key.
    cache_dir : path, optional
        Where the query journal lives (``<cache_dir>/<name>-<identity hash>.jsonl``). Give one to resume across
        runs; without it the journal is temporary (still one mechanism: answers are reused within the object).
    max_prompts, max_tokens : int, optional
        Query budget: prompts sent (across every run sharing the journal) and tokens (prompt + completion, as the
        endpoint reports them in ``usage``; a call in flight is counted at its upper bound, UTF-8 bytes of the
        prompt plus ``max_tokens`` asked). A query that would pass either raises
        :class:`~kdaudit.QueryBudgetExceededError` before it is sent.
    timeout_s : float
        Per request (connect, read, write).
    deadline_s : float, optional
        Overall wall-clock limit for this object's queries; past it the next query raises (resume later with the
        same ``cache_dir``).
    max_retries : int
        Retries of a request that failed transiently (429, 408, 409, 5xx, timeout, dropped connection).
    backoff_s, max_backoff_s : float
        Wait ``min(max_backoff_s, backoff_s * 2**attempt)`` before retry ``attempt``, or what ``Retry-After`` asks
        when it says longer (capped at ``max_backoff_s`` and at the deadline).
    headers : mapping, optional
        Extra request headers (not journaled).
    version : str, optional
        Part of the endpoint's identity (fingerprint, journal): change it when the model behind the name changes.
    """

    kind = "endpoint"

    def __init__(self, base_url: str, model: str, *, name: str | None = None, api: str = "completions",
                 access: str | LMAccess = "logprobs", max_top_k: int = 20, tokenizer: Any = None,
                 api_key_env: str | None = "OPENAI_API_KEY", cache_dir: str | os.PathLike[str] | None = None,
                 max_prompts: int | None = None, max_tokens: int | None = None, timeout_s: float = 60.0,
                 deadline_s: float | None = None, max_retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, headers: Mapping[str, str] | None = None,
                 version: str | None = None) -> None:
        httpx = _httpx()
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise invalid_argument("base_url", base_url, "an http:// or https:// URL such as "
                                                         "'http://127.0.0.1:8000/v1'")
        if "@" in base_url.split("://", 1)[1].split("/", 1)[0]:
            # credentials in the URL would reach the journal, the provenance and the report with it
            raise KDAuditError("argument 'base_url' holds credentials (user:password@host); expected a URL without "
                               "them: put the key in the environment variable named by api_key_env")
        if not isinstance(model, str) or not model:
            raise invalid_argument("model", model, "the non-empty model name the endpoint serves")
        if api not in ("completions", "chat"):
            raise invalid_argument("api", api, '"completions" or "chat"')
        try:
            self.access = LMAccess(access)
        except ValueError:
            raise invalid_argument("access", access, '"logprobs" or "text"') from None
        if not isinstance(max_top_k, (int, np.integer)) or not 1 <= max_top_k <= 20:
            raise invalid_argument("max_top_k", max_top_k, "an integer in [1, 20]")
        for arg, value in (("max_prompts", max_prompts), ("max_tokens", max_tokens)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 0):
                raise invalid_argument(arg, value, "None or an integer >= 0")
        for arg, value in (("timeout_s", timeout_s), ("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
            if not isinstance(value, (int, float)) or value < 0 or (arg == "timeout_s" and value == 0):
                raise invalid_argument(arg, value, "a number of seconds > 0" if arg == "timeout_s"
                                       else "a number of seconds >= 0")
        if deadline_s is not None and (not isinstance(deadline_s, (int, float)) or deadline_s <= 0):
            raise invalid_argument("deadline_s", deadline_s, "None or a number of seconds > 0")
        if not isinstance(max_retries, (int, np.integer)) or max_retries < 0:
            raise invalid_argument("max_retries", max_retries, "an integer >= 0")
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
            raise invalid_argument("api_key_env", api_key_env, "the name of an environment variable, or None")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = str(name or model)
        self.api = api
        self.max_top_k = int(max_top_k)
        self.tokenizer = tokenizer
        self.api_key_env = api_key_env
        self.max_prompts = max_prompts
        self.max_tokens = max_tokens
        self.timeout_s = float(timeout_s)
        self.deadline_s = deadline_s
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.version = version
        self._headers = dict(headers or {})
        self._started: float | None = None
        self._piece_ids: dict[bytes, int] | None = None
        self._tok_sha: str | None = None
        self.query_count = 0  # prompts sent by this object (answers from the journal are free)
        self.token_count = 0  # tokens the endpoint reported for them
        self.n_requests = 0  # HTTP requests, retries included
        self.n_retries = 0
        self.n_cached = 0  # prompts answered from the journal
        self.file_sha256 = None
        self._sleep: Callable[[float], None] = time.sleep
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s), follow_redirects=False)
        self._tmp: str | None = None
        if cache_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="kdaudit-endpoint-")
            root = Path(self._tmp)
        else:
            root = Path(cache_dir)
        identity = f"{self.base_url}|{self.model}|{self.version or ''}"
        self.journal = QueryJournal(root / f"{_safe(self.name)}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
                                    ".jsonl", budget=max_prompts, unit="prompts", identity=identity)
        # tokens of answers recorded by earlier runs; each answer holds the usage the endpoint reported
        self._tokens_answered = _journal_usage(self.journal.path)

    # -- identity ------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"OpenAIEndpointModel(base_url={self.base_url!r}, model={self.model!r}, api={self.api!r}, "
                f"access={str(self.access)!r}, api_key_env={self.api_key_env!r})")

    def fingerprint(self) -> str:
        return hashlib.sha256(f"endpoint|{self.base_url}|{self.model}|{self.version or ''}".encode()).hexdigest()

    def tokenizer_fingerprint(self) -> str | None:
        if self.tokenizer is None:
            return None
        if self._tok_sha is None:
            from kdaudit.models._hf import tokenizer_sha256

            self._tok_sha = tokenizer_sha256(self.tokenizer)
        return self._tok_sha

    def close(self) -> None:
        self._client.close()
        self.journal.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "OpenAIEndpointModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort for a temporary journal
        try:
            if self._tmp is not None:
                self.close()
        except Exception:
            pass

    # -- budget ----------------------------------------------------------------------------------------------
    @property
    def tokens_spent(self) -> int:
        """Tokens reported for answered queries (this run and earlier ones sharing the journal), plus the upper
        bound of every query sent but never answered (in flight at a crash, or failed)."""
        return self._tokens_answered + sum(_bound_of(k) for k in self.journal.pending)

    def _check_budgets(self, n_prompts: int, token_bound: int) -> None:
        self.journal.check_budget(n_prompts)
        if self.max_tokens is not None:
            spent = self.tokens_spent
            if spent + token_bound > self.max_tokens:
                raise QueryBudgetExceededError(
                    f"model {self.name!r}: this query could use up to {token_bound} more tokens, making "
                    f"{spent + token_bound}, over its max_tokens budget of {self.max_tokens} ({spent} used); raise "
                    "max_tokens or ask fewer or shorter prompts", used=spent, budget=self.max_tokens)

    # -- transport -------------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            text = text.replace(key, "[redacted]")
        return text

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        httpx = _httpx()
        url = f"{self.base_url}/{route}"
        headers = {"Content-Type": "application/json", **self._headers}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempt = 0
        while True:
            self._check_deadline()
            self.n_requests += 1
            status: int | None = None
            wait_hint: float | None = None
            try:
                response = self._client.post(url, content=json.dumps(body).encode(), headers=headers)
                status = response.status_code
                if status == 200:
                    try:
                        payload = response.json()
                    except ValueError:
                        raise EndpointError(f"model {self.name!r}: {route} answered 200 with a body that is not "
                                            "JSON", status=status) from None
                    if not isinstance(payload, dict):
                        raise EndpointError(f"model {self.name!r}: {route} answered 200 with "
                                            f"{type(payload).__name__}, not a JSON object", status=status)
                    return payload
                detail = self._scrub(response.text[:_MAX_ERROR_BODY])
                if status not in _RETRY_STATUS:
                    raise EndpointError(f"model {self.name!r}: {route} refused the request with HTTP {status}: "
                                        f"{detail}", status=status)
                wait_hint = _retry_after(response.headers.get("retry-after"), time.time())
                reason = f"HTTP {status}: {detail}"
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                reason = f"{type(exc).__name__}: {self._scrub(str(exc))[:_MAX_ERROR_BODY]}"
            if attempt >= self.max_retries:
                raise EndpointError(f"model {self.name!r}: {route} failed {attempt + 1} times; last: {reason}",
                                    status=status)
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
            if wait_hint is not None:
                wait = min(self.max_backoff_s, max(wait, wait_hint))
            if self.deadline_s is not None and self._started is not None:
                wait = min(wait, max(self._started + self.deadline_s - time.monotonic(), 0.0))
            self._sleep(wait)
            attempt += 1
            self.n_retries += 1

    def _check_deadline(self) -> None:
        if self._started is None:
            self._started = time.monotonic()
        if self.deadline_s is not None and time.monotonic() - self._started > self.deadline_s:
            raise EndpointError(f"model {self.name!r}: the deadline of {self.deadline_s:g} s has passed "
                                f"({self.query_count} prompts sent); run again with the same cache_dir to resume")

    def _ask(self, route: str, body: dict[str, Any], token_bound: int, parse: Callable[[dict[str, Any]], dict]
             ) -> dict[str, Any]:
        """The journaled answer to one request: from the journal when it was answered before, else sent once."""
        request = {"route": route, **body}
        key = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        key = f"{key}.{token_bound}"  # the bound rides in the key: a query lost in flight is counted at it
        if key in self.journal:
            self.n_cached += 1
            return self.journal.get(key)
        self._check_budgets(1, token_bound)

        def send() -> dict[str, Any]:
            answer = parse(self._post(route, body))
            return answer

        answer = self.journal.query(key, 1, send)
        self.query_count += 1
        self.token_count += int(answer.get("usage_tokens", 0))
        self._tokens_answered += int(answer.get("usage_tokens", 0))
        return answer

    # -- token strings back to ids ---------------------------------------------------------------------------
    def _token_id(self, token: str) -> int:
        if self.tokenizer is None:
            return _token_id_from_hash(token)
        if self._piece_ids is None:
            from kdaudit.models._hf import token_bytes

            table: dict[bytes, int] = {}
            for tid, raw in sorted(token_bytes(self.tokenizer).items()):
                table.setdefault(raw, tid)
            self._piece_ids = table
        return self._piece_ids.get(_token_to_bytes(token), -1)

    # -- scoring ---------------------------------------------------------------------------------------------
    def score(self, texts: Sequence[str], ids: Sequence[Any], *, top_k: int) -> Any:
        """Teacher-forced top-k log-probabilities of each text, through ``/completions`` with ``echo=True,
        max_tokens=0, logprobs=top_k``.

        The first token of a text has no prediction (as with local models). Token ids come from the tokenizer when
        one was given (matched by the token's bytes); a token string it cannot map gets id -1.
        """
        from kdaudit._lm_outputs import TokenTopK

        if self.access is not LMAccess.LOGPROBS:
            raise invalid_argument("access", str(self.access), '"logprobs" to score texts teacher-forced (this '
                                   "endpoint reveals text only: compare its generations instead)")
        if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= self.max_top_k:
            raise invalid_argument("top_k", top_k, f"an integer in [1, {self.max_top_k}] (max_top_k)")
        texts, ids = _check_texts(texts, ids, "texts")
        parts: list[tuple[np.ndarray, ...]] = []
        for text in texts:
            body = {"model": self.model, "prompt": text, "max_tokens": 0, "echo": True, "logprobs": int(top_k),
                    "temperature": 0.0}
            answer = self._ask("completions", body, len(text.encode()) + 1, _parse_completion)
            parts.append(self._positions(answer, int(top_k)))
        lengths = np.array([len(p[0]) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cat = lambda i, dtype, shape: (np.concatenate([p[i] for p in parts]).astype(dtype)  # noqa: E731
                                       if parts else np.zeros(shape, dtype))
        return TokenTopK(name=self.name, text_ids=np.asarray(ids), offsets=offsets,
                         top_ids=cat(0, np.int32, (0, top_k)), top_logprobs=cat(1, np.float32, (0, top_k)),
                         target_ids=cat(2, np.int32, (0,)), target_logprob=cat(3, np.float32, (0,)),
                         tokenizer_sha256=self.tokenizer_fingerprint() or "",
                         meta={"top_k": int(top_k), "endpoint": self.base_url})

    def _positions(self, answer: dict[str, Any], k: int) -> tuple[np.ndarray, ...]:
        tokens = answer["tokens"]
        token_lp = answer["token_logprobs"]
        tops = answer["top_logprobs"]
        n = max(len(tokens) - 1, 0)
        top_ids = np.full((n, k), -1, dtype=np.int32)
        top_lp = np.full((n, k), -np.inf, dtype=np.float32)
        for j in range(n):
            entry = tops[j + 1] or {}
            # sorted by log-probability, ties by token string, so the order does not depend on the JSON's
            ranked = sorted(entry.items(), key=lambda kv: (-float(kv[1]), kv[0]))[:k]
            for r, (tok, lp) in enumerate(ranked):
                top_ids[j, r] = self._token_id(tok)
                top_lp[j, r] = float(lp)
        targets = np.array([self._token_id(t) for t in tokens[1:]], dtype=np.int32)
        target_lp = np.array([np.nan if v is None else float(v) for v in token_lp[1:]], dtype=np.float32)
        if np.isnan(target_lp).any():
            raise EndpointError(f"model {self.name!r}: the endpoint returned no log-probability for an echoed "
                                "token; it does not support teacher-forced scoring (use access='text')")
        return top_ids, top_lp, targets, target_lp

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], ids: Sequence[Any], *, max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0,
                 messages: Sequence[Sequence[Mapping[str, str]]] | None = None) -> Any:
        """Continuations: greedy (``temperature=0``) or sampled with the request's ``seed`` (best effort: an endpoint
        may not honour seeds; the journal keeps what it answered, so a resumed run is reproducible).

        With ``api="chat"`` each prompt is sent as one user message, or as ``messages[i]`` when given.
        """
        from kdaudit._lm_outputs import Generations

        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise invalid_argument("max_new_tokens", max_new_tokens, "an integer >= 1")
        if do_sample and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise invalid_argument("temperature", temperature, "a number > 0 when sampling")
        prompts, ids = _check_texts(prompts, ids, "prompts")
        if messages is not None and len(messages) != len(prompts):
            raise invalid_argument("messages", f"{len(messages)} conversations", f"{len(prompts)} (one per prompt)")
        want_lp = self.access is LMAccess.LOGPROBS
        texts, logprobs = [], []
        for i, prompt in enumerate(prompts):
            body: dict[str, Any] = {"model": self.model, "max_tokens": int(max_new_tokens),
                                    "temperature": float(temperature) if do_sample else 0.0, "seed": int(seed)}
            if self.api == "chat":
                convo = [dict(m) for m in messages[i]] if messages is not None else [{"role": "user",
                                                                                       "content": prompt}]
                body["messages"] = convo
                if want_lp:
                    body.update(logprobs=True, top_logprobs=1)
                bound = sum(len(str(m.get("content", "")).encode()) + 4 for m in convo) + int(max_new_tokens)
                answer = self._ask("chat/completions", body, bound, _parse_chat)
            else:
                body["prompt"] = prompt
                if want_lp:
                    body["logprobs"] = 1
                answer = self._ask("completions", body, len(prompt.encode()) + 1 + int(max_new_tokens),
                                   _parse_completion)
            texts.append(answer["text"])
            lps = answer.get("token_logprobs")
            logprobs.append(None if lps is None else np.array([np.nan if v is None else v for v in lps],
                                                             dtype=np.float32))
        settings = {"do_sample": bool(do_sample), "max_new_tokens": int(max_new_tokens),
                    "temperature": float(temperature) if do_sample else 0.0, "seed": int(seed)}
        have_lp = want_lp and all(lp is not None for lp in logprobs)
        return Generations(name=self.name, text_ids=np.asarray(ids), texts=tuple(texts), settings=settings,
                           token_logprobs=tuple(logprobs) if have_lp else None)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(base_url=self.base_url, model=self.model, api=self.api, queries=self.query_count,
                   tokens=self.token_count, requests=self.n_requests, retries=self.n_retries,
                   cached=self.n_cached)
        return out


def _journal_usage(path: Path) -> int:
    """Sum of ``usage_tokens`` over the answers a journal file holds (read once, when a run resumes)."""
    total, seen = 0, set()
    with open(path, "rb") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line; the journal itself dropped it
            if entry.get("op") == "complete" and entry.get("key") not in seen:
                seen.add(entry.get("key"))
                payload = entry.get("payload")
                if isinstance(payload, dict):
                    total += int(payload.get("usage_tokens", 0) or 0)
    return total


def _bound_of(key: str) -> int:
    try:
        return int(key.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return 0


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "endpoint"


def _check_texts(texts: Sequence[str], ids: Sequence[Any], what: str) -> tuple[list[str], list[Any]]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise invalid_argument(what, type(texts).__name__, "a sequence of str")
    ids = list(ids)
    if len(ids) != len(texts):
        raise invalid_argument("ids", f"{len(ids)} ids", f"{len(texts)} (one per text)")
    return list(texts), ids


def _usage_tokens(payload: dict[str, Any]) -> int:
    usage = payload.get("usage") or {}
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    return int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


def _first_choice(payload: dict[str, Any], route: str) -> dict[str, Any]:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EndpointError(f"the endpoint's {route} answer has no choices[0] object (got keys "
                            f"{sorted(payload)[:8]})")
    return choices[0]


def _parse_completion(payload: dict[str, Any]) -> dict[str, Any]:
    """What the journal keeps of a /completions answer: text, tokens and their log-probabilities, usage."""
    choice = _first_choice(payload, "completions")
    text = choice.get("text")
    if not isinstance(text, str):
        raise EndpointError("the endpoint's completions answer has no choices[0].text string")
    lp = choice.get("logprobs") or {}
    out: dict[str, Any] = {"text": text, "usage_tokens": _usage_tokens(payload)}
    if lp:
        tokens, token_lp = lp.get("tokens"), lp.get("token_logprobs")
        tops = lp.get("top_logprobs") or [None] * len(tokens or [])
        if not isinstance(tokens, list) or not isinstance(token_lp, list) or len(tokens) != len(token_lp) \
                or len(tops) != len(tokens):
            raise EndpointError("the endpoint's completions logprobs are malformed (tokens, token_logprobs and "
                                "top_logprobs must be lists of one length)")
        out.update(tokens=[str(t) for t in tokens], token_logprobs=token_lp,
                   top_logprobs=[dict(t) if isinstance(t, dict) else None for t in tops])
    return out


def _parse_chat(payload: dict[str, Any]) -> dict[str, Any]:
    choice = _first_choice(payload, "chat/completions")
    message = choice.get("message") or {}
    text = message.get("content")
    if not isinstance(text, str):
        raise EndpointError("the endpoint's chat answer has no choices[0].message.content string")
    out: dict[str, Any] = {"text": text, "usage_tokens": _usage_tokens(payload)}
    content = (choice.get("logprobs") or {}).get("content")
    if isinstance(content, list):
        out["token_logprobs"] = [float(c["logprob"]) if isinstance(c, dict) and c.get("logprob") is not None
                                 else None for c in content]
        out["tokens"] = [str(c.get("token", "")) if isinstance(c, dict) else "" for c in content]
    return out
