"""Engine limits over the real PostgreSQL protocol: a query over the memory budget fails with
SQLSTATE 53200, a query over the time limit with 57014, and in both cases the server keeps
serving the next query on the same and on a new connection."""
from __future__ import annotations

import psycopg
import pytest

# A self-join with a sort on a non-spillable string aggregate: far more than 4 MiB of state.
HEAVY = ("SELECT npi, array_agg(drug_name ORDER BY drug_name) AS drugs, count(DISTINCT generic_name) AS g "
         "FROM health.prescriber_drug GROUP BY npi ORDER BY g DESC")
# A hundred billion generated rows, streamed in constant memory: never finishes within a second.
SLOW = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3"


def still_serves(server, expected: int) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0] == expected
    assert server.alive()


def test_memory_limit_gives_53200_and_server_survives(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir, env={"RXGATE_MEMORY_LIMIT": "4MiB"})
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(HEAVY).fetchall()
        assert err.value.sqlstate == "53200", err.value
        assert "backtrace" not in str(err.value).lower()
        # The same connection goes on.
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    still_serves(server, lakehouse.pipeline["loaded"])


def test_query_timeout_gives_57014_and_server_survives(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir, env={"RXGATE_QUERY_TIMEOUT_SECS": "1"})
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(SLOW).fetchall()
        assert err.value.sqlstate == "57014", err.value
        assert "timeout" in str(err.value)
        assert conn.execute("SELECT 2").fetchone()[0] == 2
    still_serves(server, lakehouse.pipeline["loaded"])


def test_heavy_query_succeeds_within_default_budget(server, lakehouse):
    """The same heavy query works under the default budget: the limit, not the query, failed."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(HEAVY).fetchall()
    assert len(rows) == lakehouse.rx.scalar("SELECT count(DISTINCT npi) FROM health.prescriber_drug")
