"""The soak's figures, limits and targets (#24), from a finished :class:`bench.soak.SoakReport`."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bench._common import Target
from bench.downtime import FAULTS_BY_NAME as DOWNTIME_FAULTS
from bench.downtime import TARGET_SLACK_S
from bench.downtime import _defaults as downtime_defaults
from bench.soak_timeline import percentile

if TYPE_CHECKING:
    from bench.soak import Soak, SoakReport

__all__ = [
    "RECOVERY_FLOOR_SIM_S",
    "RECOVERY_MARGIN_SIM_S",
    "RSS_SLOPE_LIMIT_MB_PER_SIM_H",
    "SLA_TARGET_PCT",
    "STORE_SLOPE_LIMIT_MB_PER_SIM_H",
    "Recovery",
    "figures",
    "print_details",
    "recovery_table",
    "targets",
]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# Recovery bound per fault class, simulated seconds: the downtime bench's floor + its slack
# (issue #24: "p95 within floor + 5 s"), read from its table (bench/downtime.py FAULTS), so both
# benches hold the daemon to the same physical floors made of the shipped numbers.
def _recovery_floors() -> dict[str, float]:
    d = downtime_defaults()
    floor = {name: fault.floor(d) for name, fault in DOWNTIME_FAULTS.items()}
    start = floor["job_failed"]  # a new job's WAITING→PROCESSING→CONNECTED
    return {
        "drop_held": floor["service_drop"],  # grace, then one connect
        "drop_forever": floor["service_drop"],  # the same drop, never healed by the service
        "job_failed": start,
        "ghost_start": start,  # the job fails; the ghosted start still creates its job
        "ghost_call": start,  # a room whose start was ghosted: that job exists
        "storm_5xx": start,  # counted from the storm's end here (every call fails meanwhile)
        "storm_429": start,
        "daemon_sigkill": start,  # counted from the daemon being ready again
    }


RECOVERY_FLOOR_SIM_S: dict[str, float] = _recovery_floors()
RECOVERY_MARGIN_SIM_S = TARGET_SLACK_S
# Memory: least-squares RSS slope over the last incarnation after the warm-up. A leak of one
# object per callback or per command shows as a steady slope; 12 MB per simulated day (0.5
# MB/simulated hour = 30 MB per real hour at x60) is the most a daemon meant to run for months
# may add. The noise of a 2-core shared box (GC, arenas) on a ~12-minute fit is a few MB/h.
RSS_SLOPE_LIMIT_MB_PER_SIM_H = 0.5
# Store: the db + WAL file sizes, fitted like memory. Retention is in real days (not
# compressed), so inbox/replies/transitions legitimately accumulate during a soak: the limit
# is on what a simulated day adds, against the same 12 MB/simulated day.
STORE_SLOPE_LIMIT_MB_PER_SIM_H = 0.5
SLA_TARGET_PCT = 99.9


@dataclass(frozen=True, slots=True)
class Recovery:
    """One fault class's recoveries, simulated seconds."""

    n: int
    censored: int  # the window closed first, or the fault did not take
    p50: float
    p95: float
    p99: float
    n_clean: int  # recoveries no storm, latency, kill or second fault touched
    p99_clean: float
    bound: float


def recovery_table(rep: SoakReport) -> dict[str, Recovery]:
    s = rep.config.time_scale
    out = {}
    for kind in sorted(set(rep.recovery_s) | set(rep.recovery_censored)):
        vals = [v * s for v in rep.recovery_s.get(kind, [])]
        clean = [v * s for v in rep.recovery_clean_s.get(kind, [])]
        out[kind] = Recovery(
            n=len(vals),
            censored=rep.recovery_censored[kind],
            p50=percentile(vals, 50),
            p95=percentile(vals, 95),
            p99=percentile(vals, 99),
            n_clean=len(clean),
            p99_clean=percentile(clean, 99),
            bound=RECOVERY_FLOOR_SIM_S.get(kind, 2.0) + RECOVERY_MARGIN_SIM_S,
        )
    return out


def figures(rep: SoakReport) -> dict[str, object]:
    cfg = rep.config
    s = cfg.time_scale
    rec = recovery_table(rep)
    attributed = sum(rep.attributed_s.values())
    return {
        "rooms": cfg.rooms,
        "real_s": rep.real_s,
        "time_scale": s,
        "simulated_h": rep.real_s * s / 3600.0,
        "scheduled_room_h_sim": rep.scheduled_s * s / 3600.0,
        "live_pct": rep.live_pct,
        "sla_emulator_pct": rep.sla_pct,
        "attributed_pct": 100.0 * attributed / rep.scheduled_s if rep.scheduled_s else 0.0,
        "unaccounted_pct": 100.0 * rep.unaccounted_s / rep.scheduled_s if rep.scheduled_s else 0.0,
        "excused_timeline_loose_pct": 100.0 * rep.excused_share_loose,
        "excused_timeline_strict_pct": 100.0 * rep.excused_share_strict,
        "outages": rep.outages,
        "attributed_outages": " ".join(
            f"{k}:{v}" for k, v in sorted(rep.attributed_outages.items())
        )
        or "0",
        "unaccounted_outages": len(rep.unaccounted_outages),
        "unaccounted_outages_loose_rule": rep.loose_unaccounted_outages,
        "recovery_sim_s": " ".join(
            f"{k}:n{r.n}/cens{r.censored}/p50={_f(r.p50)}/p95={_f(r.p95)}/p99={_f(r.p99)}"
            f"/clean:n{r.n_clean}/p99={_f(r.p99_clean)}(<={_f(r.bound)})"
            for k, r in rec.items()
        ),
        "faults_by_kind": " ".join(f"{k}:{v}" for k, v in sorted(rep.faults.items())),
        "daemon_sigkills": rep.daemon_kills,
        "restart_ready_max_s": max(rep.restart_ready_s, default=float("nan")),
        "broker_restarts": rep.broker_restarts,
        "duplicate_job_samples": len(rep.duplicates),
        "double_pusher_events": len(rep.double_pushers),
        "journal_sample_disagreements": len(rep.sample_disagreements),
        "journal_entries": rep.journal_entries,
        "jobs_created": rep.jobs_created,
        "commands_sent": rep.commands_sent,
        "commands_resent": rep.commands_resent,
        "commands_replayed": rep.commands_replayed,
        "commands_ok": rep.commands_ok,
        "commands_error": " ".join(f"{k}:{v}" for k, v in sorted(rep.commands_error.items()))
        or "0",
        "commands_interrupted_by_kill": rep.commands_interrupted,
        "interrupted_outcomes": " ".join(
            f"{k}:{v}" for k, v in sorted(rep.interrupted_outcomes.items())
        )
        or "0",
        "commands_lost": len(rep.commands_lost),
        "commands_double": len(rep.commands_double),
        "commands_effect_mismatch": len(rep.commands_effect_mismatch),
        "rss_mean_mb": rep.rss_mean_mb,
        "rss_slope_mb_per_h": rep.rss_slope_mb_per_h,
        "rss_slope_mb_per_sim_h": rep.rss_slope_mb_per_h / s,
        "rss_fit_from_s": rep.rss_fit_from_s,
        "rss_fit_span_s": rep.rss_fit_span_s,
        "store_mb_end": rep.store_mb_end,
        "store_slope_mb_per_sim_h": rep.store_slope_mb_per_h / s,
        "store_rows_end": _counts(rep.store_rows),
        "log_error_events": sum(rep.error_events.values()),
        "log_unexpected_errors": len(rep.unexpected_errors) + len(rep.non_json_lines),
    }


def _counts(c: Counter[str]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(c.items())) or "0"


def _f(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.3g}"


def targets(rep: SoakReport, *, full: bool) -> list[Target]:
    """The soak's limits (#24); the SLA, recovery and store targets are for the full soak."""
    s = rep.config.time_scale
    out = [
        Target("duplicate job samples", len(rep.duplicates), "<=", 0),
        Target("two jobs pushing one stream key", len(rep.double_pushers), "<=", 0),
        Target("timeline accounting error s", rep.partition_error_s, "<=", 1e-6),
        Target("journal/sample disagreements", len(rep.sample_disagreements), "<=", 0),
        Target("commands lost", len(rep.commands_lost), "<=", 0),
        Target("commands executed twice", len(rep.commands_double), "<=", 0),
        Target("reply/effect mismatches", len(rep.commands_effect_mismatch), "<=", 0),
        Target(
            "unexpected error log lines",
            len(rep.unexpected_errors) + len(rep.non_json_lines),
            "<=",
            0,
        ),
        Target(
            "RSS slope MB/sim-h", rep.rss_slope_mb_per_h / s, "<=", RSS_SLOPE_LIMIT_MB_PER_SIM_H
        ),
        Target(
            "store slope MB/sim-h",
            rep.store_slope_mb_per_h / s,
            "<=",
            STORE_SLOPE_LIMIT_MB_PER_SIM_H,
        ),
        Target("SLA emulator-side %", rep.sla_pct, ">=", SLA_TARGET_PCT),
    ]
    for kind, r in recovery_table(rep).items():
        if r.n_clean:  # the downtime bench's case: one fault at a time
            out.append(Target(f"recovery p99 {kind} (clean) sim-s", r.p99_clean, "<=", r.bound))
    if full:
        out.append(Target("simulated hours", rep.real_s * s / 3600.0, ">=", 24.0))
    return out


def print_details(rep: SoakReport, soak: Soak | None = None) -> None:
    for failure in rep.invariant_failures():
        print(f"  INVARIANT BROKEN: {failure}")
    for m in rep.commands_effect_mismatch[:10]:
        print(f"  command reply/effect mismatch {m}")
    for event, n in rep.error_events.most_common(10):
        print(f"  error log event {event} x{n}")
    s = rep.config.time_scale
    for room, a, b in sorted(rep.unaccounted_outages, key=lambda o: o[1] - o[2])[:5]:
        print(f"  unaccounted outage {room} {_iso(a)} {b - a:.2f}s real ({(b - a) * s:.0f} sim-s)")
        if soak is not None:
            print("\n".join(soak.timeline(room, a, b)))
    for rec, kind, room, a, b in sorted(rep.worst, reverse=True)[:5]:
        print(f"  slowest recovery {kind} {room} {_iso(a)} {rec:.2f}s real ({rec * s:.0f} sim-s)")
        if soak is not None:
            print("\n".join(soak.timeline(room, a, b)))
