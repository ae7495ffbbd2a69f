"""The write-ahead query journal: budget across crashes, reuse of answers, worst case re-sent after kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kdaudit import KDAuditError, QueryBudgetExceededError
from kdaudit.models import QueryJournal


def test_query_reserves_before_sending_and_reuses_answers(tmp_path):
    path = tmp_path / "q.jsonl"
    seen = []

    def send():
        # the reservation is on disk before the vendor is called
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        seen.append(entries[-1])
        return {"labels": np.array([1, 0, 2]), "meta": ("a", 1)}

    with QueryJournal(path, budget=10, identity="api-v1") as j:
        out = j.query("k0", 3, send)
        again = j.query("k0", 3, lambda: pytest.fail("answered queries are not re-sent"))
        assert j.spent == 3 and j.answered == 3 and j.remaining == 7 and j.pending == {}
    assert seen == [{"op": "reserve", "key": "k0", "cost": 3}]
    assert again is out
    with QueryJournal(path, budget=10, identity="api-v1") as j:
        got = j.get("k0")
        np.testing.assert_array_equal(got["labels"], [1, 0, 2])
        assert got["labels"].dtype == np.array([1]).dtype and got["meta"] == ("a", 1)
        assert j.spent == 3 and "k0" in j and "k1" not in j


def test_budget_refuses_before_sending(tmp_path):
    with QueryJournal(tmp_path / "q.jsonl", budget=5) as j:
        j.query("a", 4, lambda: [1])
        with pytest.raises(QueryBudgetExceededError, match="over the budget of 5") as err:
            j.query("b", 2, lambda: pytest.fail("must not be sent"))
        assert err.value.used == 4 and err.value.budget == 5
        assert j.spent == 4


def test_failed_call_stays_spent_and_a_retry_is_charged_again(tmp_path):
    with QueryJournal(tmp_path / "q.jsonl", budget=10) as j:
        def boom():
            raise TimeoutError("slow")
        with pytest.raises(TimeoutError):
            j.query("a", 4, boom)
        assert j.spent == 4 and j.answered == 0 and j.pending == {}
        j.query("a", 4, lambda: [1])
        assert j.spent == 8 and j.resent == 4 and j.answered == 4


def test_reserved_but_unanswered_counts_after_reopening(tmp_path):
    path = tmp_path / "q.jsonl"
    j = QueryJournal(path, budget=10)
    j.reserve("a", 6)
    j.close()  # as if the process died while "a" was in flight
    with QueryJournal(path, budget=10) as j:
        assert j.pending == {"a": 6} and j.spent == 6
        with pytest.raises(QueryBudgetExceededError):
            j.query("a", 6, lambda: pytest.fail("over budget: not re-sent"))
    with QueryJournal(path, budget=12) as j:
        assert j.query("a", 6, lambda: "ok") == "ok"
        assert j.spent == 12 and j.resent == 6


def test_torn_last_line_is_dropped_and_damage_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "q.jsonl"
    with QueryJournal(path) as j:
        j.query("a", 1, lambda: 1)
    with open(path, "ab") as fh:
        fh.write(b'{"op": "reserve", "key": "b", "co')  # a write cut by a crash
    with QueryJournal(path) as j:
        assert j.spent == 1 and j.get("a") == 1
    assert path.read_bytes().endswith(b"\n")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(KDAuditError, match="damaged at line 2"):
        QueryJournal(path)


def test_identity_unit_and_foreign_files_are_checked(tmp_path):
    path = tmp_path / "q.jsonl"
    QueryJournal(path, identity="model-a").close()
    with pytest.raises(KDAuditError, match="written for 'model-a'"):
        QueryJournal(path, identity="model-b")
    with pytest.raises(KDAuditError, match="counts 'rows'"):
        QueryJournal(path, identity="model-a", unit="tokens")
    other = tmp_path / "other.jsonl"
    other.write_text('{"op": "header", "format": "something-else"}\n')
    with pytest.raises(KDAuditError, match="not a kdaudit query journal"):
        QueryJournal(other)


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "q.jsonl"
    with QueryJournal(path):
        with pytest.raises(KDAuditError, match="in use by another run"):
            QueryJournal(path)
    QueryJournal(path).close()  # released on close


def test_bad_arguments(tmp_path):
    with pytest.raises(KDAuditError, match="'budget'"):
        QueryJournal(tmp_path / "q.jsonl", budget=-1)
    with QueryJournal(tmp_path / "q.jsonl") as j:
        with pytest.raises(KDAuditError, match="'cost'"):
            j.reserve("a", -2)
        with pytest.raises(KDAuditError, match="without being reserved"):
            j.complete("zzz", 1)
        with pytest.raises(KDAuditError, match="'payload'"):
            j.query("b", 1, lambda: object())


_VENDOR = textwrap.dedent("""
    import os, signal, sys
    from kdaudit.models import QueryJournal

    journal, received, die_at, budget, batch, n_batches = sys.argv[1:7]
    j = QueryJournal(journal, budget=int(budget))
    calls = 0

    def sender(i):
        def send():
            global calls
            calls += 1
            with open(received, "a") as fh:  # the vendor receives the rows
                fh.write(f"{i}\\n")
                fh.flush()
            if calls == int(die_at):
                os.kill(os.getpid(), signal.SIGKILL)  # killed after sending, before the answer is recorded
            return [i] * int(batch)
        return send

    for i in range(int(n_batches)):
        j.query(f"batch-{i}", int(batch), sender(i))
    print(j.spent, j.resent)
""")


def _vendor_run(tmp_path, die_at, budget, batch=100, n_batches=30):
    script = tmp_path / "vendor.py"
    script.write_text(_VENDOR)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "q.jsonl"), str(tmp_path / "received.txt"),
                           str(die_at), str(budget), str(batch), str(n_batches)],
                          capture_output=True, text=True, env={**os.environ}, timeout=120)


def test_kill_9_mid_run_resends_at_most_the_call_in_flight_and_the_budget_holds(tmp_path):
    batch = 100
    first = _vendor_run(tmp_path, die_at=15, budget=3100, batch=batch)
    assert first.returncode == -9
    received_before = len((tmp_path / "received.txt").read_text().split())
    assert received_before == 15
    second = _vendor_run(tmp_path, die_at=-1, budget=3100, batch=batch)
    assert second.returncode == 0, second.stderr
    received = (tmp_path / "received.txt").read_text().split()
    # the 14 answered batches are reused; only the one in flight at the kill is sent twice
    assert len(received) == 31 and received.count("14") == 2
    spent, resent = (int(v) for v in second.stdout.split())
    assert resent == batch  # the stated worst case: one call's rows
    assert spent == len(received) * batch  # the journal counts exactly what the vendor received


def test_budget_holds_across_a_crash(tmp_path):
    # a budget of 3000 rows for 30 batches of 100: the batch re-sent after the crash leaves no room for the last
    first = _vendor_run(tmp_path, die_at=10, budget=3000)
    assert first.returncode == -9
    second = _vendor_run(tmp_path, die_at=-1, budget=3000)
    assert second.returncode != 0 and "QueryBudgetExceededError" in second.stderr
    received = (tmp_path / "received.txt").read_text().split()
    assert len(received) * 100 <= 3000
    with QueryJournal(tmp_path / "q.jsonl", budget=3000) as j:
        assert j.spent == len(received) * 100
