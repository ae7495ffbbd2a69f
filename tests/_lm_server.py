"""A real OpenAI-compatible HTTP server around a tiny GPT-2, for the endpoint tests (run as a subprocess).

    python tests/_lm_server.py --port-file PATH [--faults JSON] [--delay S] [--expect-key-env NAME]

Serves ``POST /v1/completions`` (prompt, max_tokens, echo, logprobs, temperature, seed) and
``POST /v1/chat/completions`` (messages, logprobs, top_logprobs) with OpenAI's response shapes, and
``GET /stats`` (requests received, answered, per-prompt answer counts, authorization checks). ``POST /control``
starts a scenario: counters from zero, a per-request ``delay``, and faults injected by the number of the request
counted from there (1-based): ``{"faults": {"3": 429, "4": 500, "6": "timeout", "8": "drop"}, "delay": 0.1}``. The server
binds 127.0.0.1 on a free port (written to ``--port-file``), and stops by itself after ``--idle-s`` seconds
without a request or ``--lifetime-s`` seconds in all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from _lm_fixtures import gpt2  # noqa: E402
from kdaudit.models import HFCausalLM  # noqa: E402
from kdaudit.models._hf import token_bytes  # noqa: E402

MODEL_NAME = "tiny-gpt2"


class State:
    def __init__(self, faults: dict[str, object], delay: float, expect_key: str | None) -> None:
        model, tok = gpt2(0)
        self.lm = HFCausalLM(model, tok, batch_size=1)
        self.tok = tok
        self.faults = faults
        self.delay = delay
        self.expect_key = expect_key
        self.lock = threading.Lock()
        self.posts = 0
        self.posts_base = 0
        self.answered = 0
        self.by_prompt: dict[str, int] = {}
        self.auth_ok = 0
        self.auth_bad = 0
        self.last = time.monotonic()

    def stats(self) -> dict[str, object]:
        with self.lock:
            return {"posts": self.posts - self.posts_base, "answered": self.answered,
                    "by_prompt": dict(self.by_prompt), "auth_ok": self.auth_ok, "auth_bad": self.auth_bad}

    def control(self, body: dict) -> None:
        """Start a new scenario: counters from zero; faults numbered from the next request."""
        with self.lock:
            self.posts_base = self.posts
            self.answered, self.by_prompt, self.auth_ok, self.auth_bad = 0, {}, 0, 0
            self.faults = {str(self.posts + int(k)): v for k, v in (body.get("faults") or {}).items()}
            self.delay = float(body.get("delay", 0.0))


_BYTES: dict = {}


def _piece(tok, tid: int) -> str:
    """A token as OpenAI reports it: its text, or "bytes:\\xNN..." when its bytes are not valid UTF-8."""
    if not _BYTES:
        _BYTES.update(token_bytes(tok))
    raw = _BYTES[int(tid)]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def _completion(state: State, body: dict) -> dict:
    lm, tok = state.lm, state.tok
    prompt = body["prompt"]
    max_tokens = int(body.get("max_tokens", 16))
    k = body.get("logprobs")
    ids = tok(prompt)["input_ids"]
    if body.get("echo") and max_tokens == 0:
        scored = lm.score([prompt], [0], top_k=int(k or 1))
        tokens = [_piece(tok, t) for t in ids]
        token_lp = [None] + [float(v) for v in scored.target_logprob]
        tops = [None] + [{_piece(tok, t): float(v) for t, v in zip(row_ids, row_lp)}
                         for row_ids, row_lp in zip(scored.top_ids, scored.top_logprobs)]
        logprobs = {"tokens": tokens, "token_logprobs": token_lp, "top_logprobs": tops,
                    "text_offset": list(range(len(tokens)))} if k else None
        return {"object": "text_completion", "model": MODEL_NAME,
                "choices": [{"index": 0, "text": prompt, "logprobs": logprobs, "finish_reason": "length"}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}}
    temperature = float(body.get("temperature", 1.0))
    gens = lm.generate([prompt], [hashlib.sha256(prompt.encode()).hexdigest()], max_new_tokens=max_tokens,
                       do_sample=temperature > 0, temperature=max(temperature, 1e-6), seed=int(body.get("seed", 0)))
    text = gens.texts[0]
    lps = gens.token_logprobs[0]
    logprobs = None
    if k:
        new_ids = tok(text, add_special_tokens=False)["input_ids"][:len(lps)]
        logprobs = {"tokens": [_piece(tok, t) for t in new_ids], "token_logprobs": [float(v) for v in lps[:len(new_ids)]],
                    "top_logprobs": [None] * len(new_ids), "text_offset": list(range(len(new_ids)))}
    return {"object": "text_completion", "model": MODEL_NAME,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(lps),
                      "total_tokens": len(ids) + len(lps)}}


def _chat(state: State, body: dict) -> dict:
    prompt = "".join(f"{m['role']}: {m['content']}\n" for m in body["messages"]) + "assistant:"
    out = _completion(state, {"prompt": prompt, "max_tokens": body.get("max_tokens", 16),
                              "temperature": body.get("temperature", 1.0), "seed": body.get("seed", 0),
                              "logprobs": 1 if body.get("logprobs") else None})
    choice = out["choices"][0]
    logprobs = None
    if body.get("logprobs") and choice["logprobs"]:
        lp = choice["logprobs"]
        logprobs = {"content": [{"token": t, "logprob": v, "bytes": list(t.encode()), "top_logprobs": []}
                                for t, v in zip(lp["tokens"], lp["token_logprobs"])]}
    return {"object": "chat.completion", "model": MODEL_NAME,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": choice["text"]},
                         "logprobs": logprobs, "finish_reason": "length"}], "usage": out["usage"]}


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.last = time.monotonic()
            if self.path == "/stats":
                self._send(200, state.stats())
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            state.last = time.monotonic()
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/control":
                state.control(body)
                self._send(200, state.stats())
                return
            with state.lock:
                state.posts += 1
                number = state.posts
                auth = self.headers.get("Authorization")
                if state.expect_key is not None:
                    if auth == f"Bearer {state.expect_key}":
                        state.auth_ok += 1
                    else:
                        state.auth_bad += 1
            fault = state.faults.get(str(number))
            if fault == 429:
                self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                return
            if fault in (500, 502, 503):
                self._send(int(fault), {"error": {"message": "server error"}})
                return
            if fault == "echo-auth":  # a careless server that repeats the request's credentials in its error
                self._send(400, {"error": {"message": f"bad request; you sent {self.headers.get('Authorization')}"}})
                return
            if fault == "timeout":
                time.sleep(3.0)
            if fault == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if state.delay:
                time.sleep(state.delay)
            if self.path == "/v1/completions":
                with state.lock:
                    payload = _completion(state, body)
            elif self.path == "/v1/chat/completions":
                with state.lock:
                    payload = _chat(state, body)
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            key = hashlib.sha256(json.dumps(body.get("prompt", body.get("messages")), sort_keys=True)
                                 .encode()).hexdigest()[:16]
            try:
                self._send(200, payload)
            except OSError:
                return  # the client went away (timed out or was killed): not answered
            with state.lock:
                state.answered += 1
                state.by_prompt[key] = state.by_prompt.get(key, 0) + 1

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--faults", default="{}")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--expect-key-env", default=None)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--lifetime-s", type=float, default=600.0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    expect = os.environ.get(args.expect_key_env) if args.expect_key_env else None
    state = State(json.loads(args.faults), args.delay, expect)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    started = time.monotonic()

    def watchdog() -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            if now - state.last > args.idle_s or now - started > args.lifetime_s:
                server.shutdown()
                return

    threading.Thread(target=watchdog, daemon=True).start()
    tmp = args.port_file + ".tmp"
    Path(tmp).write_text(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
