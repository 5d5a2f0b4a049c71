"""W6 policy overhead (issue 5): the W3 dashboard mix through rxgate's pgwire, in one run and
on one server, as three users of the demo policy (catalog/policies.toml, built into the
binary):

- `bench` (role admin): the policy grants everything, so the tables are used as they are;
  this is the baseline "no policy";
- `analyst_b` (role analyst): NPIs through the keyed HMAC-SHA256 pseudonym, names redacted,
  small cells suppressed: a plan under every query that computes the masks;
- `auditor_ca` (role state_auditor, CA): a row filter (presc_state = 'CA') under every query.

Reported: tps and p99 per role and client count, and each role's ratio to the admin's.
The goal is an overhead of at most 5% (ratio of tps >= 0.95). What the analyst's plans cost
beyond the admin's: the small-cell CASE on every summed count, the redaction of the names
the top-N returns, and one pseudonym per group of `GROUP BY npi` (the injective mask rule
groups and counts by the real NPI; `count(DISTINCT npi)` computes no pseudonym). The npi
lookup with a real NPI is answered by a null check (the pseudonym literal rule). The
rewrite's own cost is in the criterion bench `cargo bench -p rxgate-policy`."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from harness import interleaved, log
from w3_dashboard import Run, _pgbench, write_scripts

#: Users measured besides the admin baseline, with their role in the demo policy.
ROLES = {"bench": "admin", "analyst_b": "analyst", "auditor_ca": "state_auditor"}


@dataclass
class W6Result:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)  # (user, clients)
    secs: int = 0
    clients: list[int] = field(default_factory=list)

    def med(self, user: str, clients: int, attr: str) -> float | None:
        import statistics
        vals = [getattr(r, attr) for r in self.runs.get((user, clients), [])
                if getattr(r, attr) is not None and r.error is None]
        return statistics.median(vals) if vals else None

    def ratio(self, user: str, clients: int) -> float | None:
        a, b = self.med(user, clients, "tps"), self.med("bench", clients, "tps")
        return a / b if a and b else None


def add_users(rx) -> None:
    """The measured users, with the bench user's password, in the server's users file (the
    server re-reads it at the next login)."""
    for user, role in ROLES.items():
        if user == "bench":
            continue
        subprocess.run([str(rx.binary), "--data-dir", str(rx.lake), "user", "add", user, "--role", role,
                        "--password-stdin"], input=rx.password + "\n", text=True, capture_output=True,
                       env=rx.env(), cwd=rx.work)


def run(ctx, reps: int, secs: int, clients: list[int]) -> W6Result:
    res = W6Result(secs=secs, clients=clients)
    rx = ctx.rxgate
    add_users(rx)
    files = write_scripts(ctx.sample, ctx.work / "w6-scripts")
    for c in clients:
        fns = []
        for user in ROLES:
            def one(user=user, c=c):
                r = _pgbench(files, ("127.0.0.1", rx.pg_port), user, "rxgate", rx.pg_env(), c, secs,
                             ctx.work / f"w6-log-{user}")
                res.runs.setdefault((user, c), []).append(r)
                log(f"W6 {user} ({ROLES[user]}) -c {c}: tps {r.tps}, p99 {r.p99_ms} ms"
                    + (f", ERROR {r.error}" if r.error else ""))
            fns.append((user, one))
        interleaved(reps, fns)
    return res


def render(res: W6Result, scale: float, reps: int, header: str) -> str:
    lines = [f"### W6 policy overhead — scale {scale}, {reps} repetitions of {res.secs} s", "", header, "",
             "The W3 dashboard mix on one server, interleaved, as three users of the demo policy; "
             "ratio = the role's tps / the admin's tps (goal: ≥ 0.95, i.e. ≤ 5% overhead).", "",
             "| clients | role | tps (median) | p99 ms (median) | tps ratio to admin |", "|---|---|---|---|---|"]
    for c in res.clients:
        for user, role in ROLES.items():
            tps, p99, ratio = res.med(user, c, "tps"), res.med(user, c, "p99_ms"), res.ratio(user, c)
            errors = [r.error for r in res.runs.get((user, c), []) if r.error]
            cell = lambda v, f: f.format(v) if v is not None else ("error: " + errors[0][:80] if errors else "—")
            lines.append(f"| {c} | {role} (`{user}`) | {cell(tps, '{:.1f}')} | {cell(p99, '{:.1f}')} | "
                         f"{cell(ratio, '{:.3f}')} |")
    return "\n".join(lines) + "\n"
