"""Replays the start-up and introspection SQL that real clients send (tests/fixtures/clients/
<client>.sql) against `rxgate serve`, and asserts every statement succeeds, over both the
simple and the extended query protocol, with the expectations the fixtures state.

Fixture format: statements separated by a line holding only `;`. Comment lines at the top of
an entry may carry directives:
    -- expect: <python expression over `rows` (text values) and `cols` (column names)>
    -- params: <JSON list of text parameters for $1..$n> (extended protocol only)
    -- simple-only   (run with the simple protocol only, as that client does)
Other comments are part of the statement text, as the client sent them.

The results of most statements are pinned in tests/slt/client_startup.slt (the SQL corpus,
run by `cargo test`); only expectations about parameters or column names stay here.
"""
from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

FIXTURES = Path(__file__).parent / "fixtures" / "clients"


def load(path: Path) -> list[dict]:
    entries, lines = [], []
    for line in path.read_text().splitlines() + [";"]:
        if line.strip() == ";":
            body = "\n".join(lines).strip()
            lines = []
            if not body or all(l.startswith("--") for l in body.splitlines()):
                continue
            entry = {"sql": [], "expect": [], "params": None, "simple_only": False}
            for l in body.splitlines():
                s = l.strip()
                if s.startswith("-- expect:"):
                    entry["expect"].append(s[len("-- expect:"):].strip())
                elif s.startswith("-- params:"):
                    entry["params"] = json.loads(s[len("-- params:"):])
                elif s == "-- simple-only":
                    entry["simple_only"] = True
                else:
                    entry["sql"].append(l)
            entry["sql"] = "\n".join(entry["sql"]).strip()
            entries.append(entry)
        else:
            lines.append(line)
    return entries


def text_rows(res) -> tuple[list[str], list[tuple]]:
    cols = [res.fname(i).decode() for i in range(res.nfields)]
    rows = []
    for r in range(res.ntuples):
        rows.append(tuple(None if (v := res.get_value(r, c)) is None else bytes(v).decode()
                          for c in range(res.nfields)))
    return cols, rows


OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)


def check(path, i, entry, mode, res, server):
    where = f"{path.name} entry {i + 1} ({mode}):\n{entry['sql'][:600]}"
    assert res.status in OK, f"{where}\nfailed: {res.error_message.decode(errors='replace')}\n" \
                             f"server log:\n{server.log_text()[-1500:]}"
    cols, rows = text_rows(res)
    for e in entry["expect"]:
        assert eval(e, {}, {"rows": rows, "cols": cols}), f"{where}\nexpectation {e!r} failed: " \
                                                         f"cols={cols} rows={rows[:5]}"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.sql")), ids=lambda p: p.stem)
def test_client_startup_sql(server, path):
    entries = load(path)
    assert entries, f"{path} holds no statements"
    with psycopg.connect(server.dsn(), autocommit=True, application_name=f"replay-{path.stem}") as conn:
        pg = conn.pgconn
        for i, entry in enumerate(entries):
            sql = entry["sql"].encode()
            if entry["params"] is None:
                check(path, i, entry, "simple", pg.exec_(sql), server)
            if not entry["simple_only"]:
                params = [None if p is None else str(p).encode() for p in (entry["params"] or [])]
                check(path, i, entry, "extended", pg.exec_params(sql, params), server)
