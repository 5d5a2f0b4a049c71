"""Crash safety of ingest: one atomic Iceberg commit per delivery.

(a) RXGATE_FAILPOINT=ingest.before_commit aborts the process after all data
    files are written and right before the commit: nothing may be visible.
(b) SIGKILL at a random moment of a larger ingest: the delivery is either
    absent or complete, never partial; a re-run then gives exact counts.

The random kill times come from RXGATE_CRASH_SEED (default: a fresh seed,
printed, so a failure can be replayed).
"""
from __future__ import annotations

import os
import random
import signal
import time

import lake
from conftest import D1, D2, D3, generate
from oracle import Oracle

FAILPOINT = {"RXGATE_FAILPOINT": "ingest.before_commit"}


def test_failpoint_before_commit_commits_nothing(rx, dataset, oracle_d1):
    rx.pipeline(dataset.root, D1)
    counts = lake.table_counts(rx)
    d1 = lake.fingerprint(rx, D1)

    # A new delivery dies before its commit: no trace of it.
    p = rx.run("ingest", "prescribers", dataset.prescribers, "--delivery-date", D2,
               env=FAILPOINT, check=False)
    assert p.returncode != 0, "the failpoint did not stop the ingest"
    assert lake.table_counts(rx) == counts
    assert rx.count(lake.PRESCRIBER_DRUG, lake.on(D2)) == 0
    assert rx.count(lake.REJECTS, lake.on(D2)) == 0

    # A replacement of an existing delivery dies: the old data stays whole.
    p = rx.run("ingest", "prescribers", dataset.prescribers, "--delivery-date", D1,
               env=FAILPOINT, check=False)
    assert p.returncode != 0
    assert lake.table_counts(rx) == counts
    assert lake.fingerprint(rx, D1) == d1

    # The same for the cities dimension.
    p = rx.run("ingest", "cities", dataset.cities, "--delivery-date", D2,
               env=FAILPOINT, check=False)
    assert p.returncode != 0
    assert rx.count(lake.US_CITIES, lake.on(D2)) == 0

    # Re-running without the failpoint completes, with no duplicates.
    s = rx.ingest("prescribers", dataset.prescribers, D2)
    lake.assert_counts(s, oracle_d1, "re-run after the failpoint")
    assert rx.count(lake.PRESCRIBER_DRUG, lake.on(D2)) == oracle_d1.loaded
    assert rx.count(lake.REJECTS, lake.on(D2)) == oracle_d1.quarantined
    assert rx.count(lake.PRESCRIBER_DRUG) == 2 * oracle_d1.loaded
    assert lake.fingerprint(rx, D1) == d1
    # Same input, so the same rows (the compared columns exclude the date).
    lake.assert_tables_match_oracle(rx, oracle_d1, D2, with_cities=False)


def test_sigkill_mid_ingest_is_all_or_nothing(rx, rxgate_bin, tmp_path):
    seed = int(os.environ.get("RXGATE_CRASH_SEED") or time.time_ns() % 1_000_000)
    print(f"RXGATE_CRASH_SEED={seed}")
    rng = random.Random(seed)

    big = generate(rxgate_bin, tmp_path / "big", scale="0.05", seed="43")
    oracle = Oracle.from_inputs(big.root / "prescribers", None, D1)
    L, Q = oracle.loaded, oracle.quarantined

    rx.apply_catalog()
    t0 = time.monotonic()
    rx.ingest("prescribers", big.prescribers, D1)
    full = time.monotonic() - t0  # how long one whole ingest takes here
    d1 = lake.fingerprint(rx, D1)
    assert d1[lake.PRESCRIBER_DRUG] == L

    # D2 and D3 are killed while new; the second D2 is killed while it
    # replaces the committed D2, which must then still be whole.
    killed = 0
    committed: set[str] = set()
    for attempt, date in enumerate((D2, D3, D2)):
        delay = rng.uniform(0.1, 0.7) * full
        proc = rx.popen("ingest", "prescribers", big.prescribers, "--delivery-date", date,
                        log=tmp_path / f"kill-{attempt}.log")
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        rc = proc.wait(timeout=60)
        n = rx.count(lake.PRESCRIBER_DRUG, lake.on(date))
        r = rx.count(lake.REJECTS, lake.on(date))
        where = f"attempt {attempt} ({date}, kill after {delay:.2f}s of ~{full:.2f}s, rc={rc})"
        if rc == 0 or date in committed:
            assert (n, r) == (L, Q), f"{where}: {n} rows / {r} rejects, want {L} / {Q}"
        else:
            assert n in (0, L), f"{where}: partial delivery, {n} of {L} rows visible"
            assert r in (0, Q), f"{where}: partial quarantine, {r} of {Q} rejects visible"
        assert lake.fingerprint(rx, D1) == d1, f"{where}: D1 changed"

        # A re-run always completes with exact counts.
        s = rx.ingest("prescribers", big.prescribers, date)
        lake.assert_counts(s, oracle, f"re-run after {where}")
        assert rx.count(lake.PRESCRIBER_DRUG, lake.on(date)) == L
        assert rx.count(lake.REJECTS, lake.on(date)) == Q
        committed.add(date)

    assert killed >= 1, f"no ingest was still running when killed (one ingest takes {full:.2f}s)"
    assert rx.count(lake.PRESCRIBER_DRUG) == 3 * L
    assert rx.count(lake.REJECTS) == 3 * Q
    lake.assert_tables_match_oracle(rx, oracle, D3, with_cities=False)
