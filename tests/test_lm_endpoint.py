"""OpenAI-compatible endpoints, audited through the real client path against a local server around a tiny GPT-2.

The server (tests/_lm_server.py) is a subprocess on 127.0.0.1 with a free port; it injects 429s, 500s, timeouts and
dropped connections on chosen requests and counts what it answered, so the tests can show that retries recover,
budgets hold, nothing is bought twice, and a client killed mid-run resumes without re-buying its answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kdaudit import KDAuditError, QueryBudgetExceededError
from kdaudit.data import PromptSet
from kdaudit.harness import generate_all, score_all
from kdaudit.models import EndpointError, HFCausalLM, OpenAIEndpointModel

httpx = pytest.importorskip("httpx")
pytest.importorskip("transformers")

HERE = Path(__file__).resolve().parent
TEXTS = ["Return the sum of a and b.", "Split the string at the first occurrence of sep.",
         "Create a new dictionary with keys from iterable.", "Open a file and return a stream.",
         "Convert a number to a string."]
KEY_ENV = "KDAUDIT_TEST_API_KEY"
SECRET = "sk-test-7f3a9c1e5b2d4f6a8c0e"


class Server:
    """One server process for the whole module (starting one costs seconds); each test starts a scenario."""

    def __init__(self, tmp: Path):
        port_file = tmp / "port"
        env = {**os.environ, KEY_ENV: SECRET}
        cmd = [sys.executable, str(HERE / "_lm_server.py"), "--port-file", str(port_file), "--idle-s", "120",
               "--lifetime-s", "900", "--expect-key-env", KEY_ENV]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(1200):  # bounded: 120 s on a loaded machine
            if port_file.exists():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("server did not start in 120 s")
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}/v1"

    def scenario(self, *, faults: dict | None = None, delay: float = 0.0) -> "Server":
        httpx.post(self.url.removesuffix("/v1") + "/control", json={"faults": faults or {}, "delay": delay},
                   timeout=30)
        return self

    def stats(self) -> dict:
        return httpx.get(self.url.removesuffix("/v1") + "/stats", timeout=30).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


@pytest.fixture()
def server_factory(shared_server):
    def start(**kwargs) -> Server:
        return shared_server.scenario(**kwargs)

    yield start
    shared_server.scenario()


@pytest.fixture(scope="module")
def local():
    from _lm_fixtures import gpt2

    model, tok = gpt2(0)
    return HFCausalLM(model, tok, name="local"), tok


def _endpoint(server: Server, tmp_path: Path, tok=None, **kwargs) -> OpenAIEndpointModel:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("backoff_s", 0.01)
    return OpenAIEndpointModel(server.url, "tiny-gpt2", name=kwargs.pop("name", "api"), tokenizer=tok,
                               api_key_env=KEY_ENV, **kwargs)


def test_scoring_through_the_endpoint_matches_the_local_model(server_factory, tmp_path, local):
    lm, tok = local
    server = server_factory()
    with _endpoint(server, tmp_path, tok) as api:
        remote = api.score(TEXTS, list(range(5)), top_k=5)
        here = lm.score(TEXTS, list(range(5)), top_k=5)
        np.testing.assert_array_equal(remote.offsets, here.offsets)
        np.testing.assert_array_equal(remote.target_ids, here.target_ids)
        np.testing.assert_allclose(remote.target_logprob, here.target_logprob, atol=1e-6)
        np.testing.assert_allclose(remote.top_logprobs, here.top_logprobs, atol=1e-6)
        np.testing.assert_array_equal(remote.top_ids, here.top_ids)
        assert remote.tokenizer_sha256 == here.tokenizer_sha256
        assert api.query_count == 5 and api.token_count > 0
    assert server.stats()["answered"] == 5


def test_generation_through_completions_and_chat(server_factory, tmp_path, local):
    lm, tok = local
    server = server_factory()
    prompts = ["def f(x):", "Return the"]
    with _endpoint(server, tmp_path, tok) as api:
        gens = api.generate(prompts, ["a", "b"], max_new_tokens=6)
        assert gens.texts == lm.generate(prompts, ["a", "b"], max_new_tokens=6).texts
        assert gens.token_logprobs is not None and len(gens.token_logprobs[0]) > 0
    with _endpoint(server, tmp_path, tok, api="chat", name="chat") as chat:
        out = chat.generate(["hello there"], ["c"], max_new_tokens=5)
        expected = lm.generate(["user: hello there\nassistant:"], ["c"], max_new_tokens=5)
        assert out.texts == expected.texts
        with pytest.raises(KDAuditError, match="messages"):
            chat.generate(["a", "b"], [1, 2], max_new_tokens=2, messages=[[{"role": "user", "content": "a"}]])


def test_retries_recover_from_429_500_timeouts_and_drops(server_factory, tmp_path, local):
    lm, tok = local
    server = server_factory(faults={"1": 429, "2": 500, "3": "timeout", "5": "drop", "7": 503})
    with _endpoint(server, tmp_path, tok, timeout_s=1.0) as api:
        out = api.score(TEXTS, list(range(5)), top_k=3)
        np.testing.assert_allclose(out.target_logprob, lm.score(TEXTS, list(range(5)), top_k=3).target_logprob,
                                   atol=1e-6)
        assert api.n_retries == 5 and api.query_count == 5
    stats = server.stats()
    assert stats["answered"] == 5 and stats["posts"] == 10


def test_refusals_and_exhausted_retries_raise_clearly(server_factory, tmp_path):
    server = server_factory(faults={str(i): 500 for i in range(1, 4)})
    with _endpoint(server, tmp_path, max_retries=2) as api:
        with pytest.raises(EndpointError, match="failed 3 times; last: HTTP 500") as info:
            api.generate(["x"], [0], max_new_tokens=2)
        assert info.value.status == 500
    with _endpoint(server, tmp_path, name="api2") as api:
        with pytest.raises(EndpointError, match="404"):
            api._post("nowhere", {})


def test_budgets_stop_before_sending(server_factory, tmp_path):
    server = server_factory()
    with _endpoint(server, tmp_path, max_prompts=3) as api:
        with pytest.raises(QueryBudgetExceededError, match="budget"):
            api.generate(TEXTS, list(range(5)), max_new_tokens=3)
    assert server.stats()["answered"] == 3
    # the budget holds across runs sharing the journal
    with _endpoint(server, tmp_path, max_prompts=3) as again:
        again.generate(TEXTS[:3], list(range(3)), max_new_tokens=3)  # answered before: free
        with pytest.raises(QueryBudgetExceededError):
            again.generate(TEXTS[3:4], [3], max_new_tokens=3)
    assert server.stats()["answered"] == 3
    with _endpoint(server, tmp_path, name="tokens", max_tokens=40) as api:
        with pytest.raises(QueryBudgetExceededError, match="max_tokens"):
            api.generate(TEXTS, list(range(5)), max_new_tokens=3)
        assert 0 < api.tokens_spent <= 40


def test_answers_are_cached_and_never_bought_twice(server_factory, tmp_path, local):
    _, tok = local
    server = server_factory()
    with _endpoint(server, tmp_path, tok) as api:
        first = api.score(TEXTS, list(range(5)), top_k=3)
        api.score(TEXTS, list(range(5)), top_k=3)
        assert api.n_cached == 5
    with _endpoint(server, tmp_path, tok) as resumed:
        again = resumed.score(TEXTS, list(range(5)), top_k=3)
        assert resumed.query_count == 0 and resumed.n_cached == 5
    np.testing.assert_array_equal(first.top_logprobs, again.top_logprobs)
    assert server.stats()["answered"] == 5


def test_api_key_is_sent_but_never_written(server_factory, tmp_path, local, monkeypatch):
    _, tok = local
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = server_factory(faults={"3": "echo-auth"})
    cache = tmp_path / "cache"
    api = _endpoint(server, tmp_path, tok, cache_dir=cache)
    result = score_all([api], PromptSet(TEXTS[:2]), top_k=2, cache_dir=tmp_path / "runs")
    with pytest.raises(EndpointError) as info:
        api.generate(["x"], [0], max_new_tokens=2)
    api.close()
    assert server.stats()["auth_ok"] == 3 and server.stats()["auth_bad"] == 0
    assert "[redacted]" in str(info.value)
    written = [repr(api), str(api.describe()), str(info.value), json.dumps(result.provenance, default=str)]
    written += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert all(SECRET not in w for w in written)
    assert not any(v == SECRET for v in vars(api).values() if isinstance(v, str))


def test_text_only_endpoints_are_skipped_for_scoring(server_factory, tmp_path, local):
    lm, tok = local
    server = server_factory()
    with _endpoint(server, tmp_path, access="text") as api:
        with pytest.raises(KDAuditError, match="logprobs"):
            api.score(TEXTS, list(range(5)), top_k=2)
        result = score_all([lm, api], PromptSet(TEXTS), top_k=2)
        assert list(result.outputs) == ["local"] and "text only" in result.skipped["api"]
        gens = generate_all([lm, api], PromptSet(TEXTS[:2]), max_new_tokens=3)
        assert gens["api"].texts == gens["local"].texts and gens["api"].token_logprobs is None
        assert not gens.comparison.per_token and "unknown" in gens.comparison.reason


def test_deadline_stops_a_slow_run(server_factory, tmp_path):
    server = server_factory(delay=0.3)
    with _endpoint(server, tmp_path, deadline_s=0.5) as api:
        with pytest.raises(EndpointError, match="deadline"):
            api.generate(TEXTS, list(range(5)), max_new_tokens=2)
        assert 1 <= api.query_count < 5


CLIENT = textwrap.dedent("""
    import sys
    from kdaudit.data import PromptSet
    from kdaudit.harness import generate_all
    from kdaudit.models import OpenAIEndpointModel
    url, cache, runs = sys.argv[1:4]
    texts = [f"Return item number {i} of the list." for i in range(24)]
    api = OpenAIEndpointModel(url, "tiny-gpt2", name="api", cache_dir=cache, api_key_env=None, backoff_s=0.01)
    out = generate_all([api], PromptSet(texts), max_new_tokens=4, cache_dir=runs, chunk_size=5)
    print("DONE", api.query_count, api.n_cached, flush=True)
""")


def test_killed_client_resumes_without_rebuying(server_factory, tmp_path):
    server = server_factory(delay=0.15)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    args = [sys.executable, str(script), server.url, str(tmp_path / "cache"), str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(HERE.parent))}
    client = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # bounded: 60 s
            if server.stats()["answered"] >= 8 or client.poll() is not None:
                break
            time.sleep(0.1)
        assert client.poll() is None, client.stderr.read().decode()[-2000:]
        os.kill(client.pid, signal.SIGKILL)
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    before = server.stats()["answered"]
    assert 8 <= before < 24
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    sent_now, cached = map(int, done.stdout.split("DONE")[1].split())
    stats = server.stats()
    assert len(stats["by_prompt"]) == 24  # every prompt answered
    # nothing answered before the kill is bought again; at most the one call in flight at the kill is re-sent
    assert stats["answered"] <= 24 + 1
    assert sum(c > 1 for c in stats["by_prompt"].values()) <= 1
    assert sent_now == stats["answered"] - before and sent_now + cached <= 24 - 5


def test_retry_after_and_backoff_schedule(server_factory, tmp_path):
    from email.utils import formatdate

    from kdaudit.models._endpoint import _retry_after

    assert _retry_after("3", 0.0) == 3.0
    assert _retry_after(None, 0.0) is None and _retry_after("soon", 0.0) is None
    now = time.time()
    assert 9 <= _retry_after(formatdate(now + 10, usegmt=True), now) <= 10
    server = server_factory(faults={"1": 500, "2": 500, "3": 429})
    with _endpoint(server, tmp_path, backoff_s=0.5, max_backoff_s=1.5) as api:
        waits: list[float] = []
        api._sleep = waits.append
        api.generate(["x"], [0], max_new_tokens=2)
        assert waits == [0.5, 1.0, 1.5]  # doubling, capped; Retry-After: 0 does not shorten the backoff


def test_endpoint_arguments_are_checked(tmp_path):
    with pytest.raises(KDAuditError, match="base_url"):
        OpenAIEndpointModel("ftp://x", "m", cache_dir=tmp_path)
    with pytest.raises(KDAuditError, match="credentials") as info:
        OpenAIEndpointModel("https://user:hunter2@api.example.com/v1", "m", cache_dir=tmp_path)
    assert "hunter2" not in str(info.value)
    with pytest.raises(KDAuditError, match="'api'"):
        OpenAIEndpointModel("http://127.0.0.1:9/v1", "m", api="embeddings", cache_dir=tmp_path)
    with pytest.raises(KDAuditError, match="max_top_k"):
        OpenAIEndpointModel("http://127.0.0.1:9/v1", "m", max_top_k=50, cache_dir=tmp_path)
    with pytest.raises(KDAuditError, match="max_prompts"):
        OpenAIEndpointModel("http://127.0.0.1:9/v1", "m", max_prompts=-1, cache_dir=tmp_path)
