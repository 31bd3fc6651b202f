"""Turns one hack/bench-failover run into the issue's table and target/bench-failover.json.

Inputs (in the run's work directory): write-a.json and write-b.json (`ledger write`, variants A
and B), verify-a.json and verify-b.json (`ledger verify`), roles.json (`ledger roles`) and
events.jsonl (one line per rollout or kill the script drove: name, kind, settled, seconds).
Every figure is derived from those files; nothing is assumed about the operator.
"""

import json
import math
import sys
from pathlib import Path


def percentile(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def load(path):
    return json.loads(Path(path).read_text())


def event_of(events, at_ms):
    """The writer event whose [start, end] holds at_ms, else None."""
    for event in events:
        end = event["end_ms"] if event["end_ms"] is not None else math.inf
        if event["start_ms"] <= at_ms <= end:
            return event["name"]
    return None


def lost_by_event(writer, verify):
    counts = {}
    for at in verify["lost_acked_at_ms"]:
        name = event_of(writer["events"], at) or "outside-events"
        counts[name] = counts.get(name, 0) + 1
    return counts


def gap_at(writer, roles, promotion):
    """The writer's longest listed gap overlapping the poll interval that saw a promotion.

    Both clocks are wall clocks (started_unix_ms + offsets), so this is good to a few ms.
    """
    at = roles["started_unix_ms"] + promotion["at_ms"] - writer["started_unix_ms"]
    window = (at - roles["interval_ms"], at)
    overlapping = [
        g["ms"]
        for g in writer["over_threshold"]
        if g["start_ms"] < window[1] and g["end_ms"] > window[0]
    ]
    return max(overlapping) if overlapping else None


def fmt_ms(value):
    return "-" if value is None else f"{value:.0f} ms"


def main(work, out, run_id, meta_json):
    work = Path(work)
    meta = json.loads(meta_json)
    writers = {v: load(work / f"write-{v}.json") for v in ("a", "b")}
    verifies = {v: load(work / f"verify-{v}.json") for v in ("a", "b")}
    roles = load(work / "roles.json")
    driven = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines() if line]

    lost = {v: lost_by_event(writers[v], verifies[v]) for v in ("a", "b")}
    writer_events = {v: {e["name"]: e for e in writers[v]["events"]} for v in ("a", "b")}
    role_events = {e["name"]: e for e in roles["events"]}
    events = []
    for d in driven:
        name = d["name"]
        r = role_events.get(name, {})
        events.append({
            **d,
            "lost_a": lost["a"].get(name, 0),
            "lost_b": lost["b"].get(name, 0),
            "longest_gap_ms_a": writer_events["a"].get(name, {}).get("longest_gap_ms"),
            "longest_gap_ms_b": writer_events["b"].get(name, {}).get("longest_gap_ms"),
            "promotions": r.get("promotions"),
            "demotions": r.get("demotions"),
            "max_primaries": r.get("max_primaries"),
        })

    promotions = [
        {"pod": pod, **t}
        for pod, history in roles["pods"].items()
        for t in history["transitions"]
        if t["to"] == "primary" and t["from"] != "primary"
    ]
    # A pod that was down between replica and primary shows as down -> primary here; the
    # poller's own promotion count already tells those apart from restarts.
    # Only a rollout's promotion is a FAILOVER; a kill's is a failover after the primary died.
    rollout_windows = [
        (e["start_ms"], e["end_ms"]) for e in roles["events"] if e["name"].startswith("rollout")
    ]
    switch_gaps = [
        g for g in (
            gap_at(writers["a"], roles, p) for p in promotions
            if p["from"] == "replica"
            and any(start <= p["at_ms"] <= end for start, end in rollout_windows)
        )
        if g is not None
    ]

    def kind(k):
        return [e for e in events if e["kind"] == k]

    def summary(k):
        chosen = kind(k)
        # Availability is what the plain SET client saw; B's gaps also count writes that
        # succeeded but were not replicated in time, so they are reported beside it.
        gaps = [e["longest_gap_ms_a"] for e in chosen if e["longest_gap_ms_a"] is not None]
        gaps_b = [e["longest_gap_ms_b"] for e in chosen if e["longest_gap_ms_b"] is not None]
        return {
            "count": len(chosen),
            "settled": sum(1 for e in chosen if e["settled"]),
            "lost_a": sum(e["lost_a"] for e in chosen),
            "lost_b": sum(e["lost_b"] for e in chosen),
            "role_changes": [e["promotions"] for e in chosen],
            "gap_p50_ms": percentile(gaps, 50),
            "gap_p99_ms": percentile(gaps, 99),
            "gap_b_p50_ms": percentile(gaps_b, 50),
            "gap_b_p99_ms": percentile(gaps_b, 99),
            "max_primaries": max((e["max_primaries"] or 0 for e in chosen), default=0),
        }

    rollouts, kills = summary("rollout"), summary("kill")
    result = {
        **meta,
        "events": events,
        "rollouts": rollouts,
        "kills": kills,
        "lost_outside_events": {v: lost[v].get("outside-events", 0) for v in ("a", "b")},
        "acked": {v: writers[v]["acked"] for v in ("a", "b")},
        "failed": {v: writers[v]["failed"] for v in ("a", "b")},
        "writer_targets": {v: writers[v]["targets"] for v in ("a", "b")},
        "failover_pause_ms": switch_gaps,
        "failover_pause_p99_ms": percentile(switch_gaps, 99),
        "max_primaries_at_once": roles["max_primaries_at_once"],
        "role_rounds": roles["rounds"],
        "role_interval_ms": roles["interval_ms"],
        "promotions": roles["promotions"],
        "demotions": roles["demotions"],
    }

    runs = {}
    if Path(out).exists():
        try:
            runs = load(out).get("runs", {})
        except (ValueError, AttributeError):
            runs = {}
    runs[run_id] = result
    Path(out).write_text(json.dumps({"runs": runs}, indent=2) + "\n")

    def verdict(ok):
        return "met" if ok else "MISSED"

    def loss_verdict(variant, ok):
        # No loss among no acknowledged writes proves nothing.
        return verdict(ok) if result["acked"][variant] > 0 else "n/a: nothing acked"

    rows = [
        ("acked writes lost, A (SET)", str(rollouts["lost_a"]), str(kills["lost_a"]),
         "0 rollouts", loss_verdict("a", rollouts["lost_a"] == 0)),
        ("acked writes lost, B (WAIT 1)", str(rollouts["lost_b"]), str(kills["lost_b"]),
         "0 both", loss_verdict("b", rollouts["lost_b"] == 0 and kills["lost_b"] == 0)),
        ("role changes per event", ",".join(str(x) for x in rollouts["role_changes"]) or "-",
         ",".join(str(x) for x in kills["role_changes"]) or "-",
         "1 per rollout", verdict(bool(rollouts["role_changes"])
                                  and all(x == 1 for x in rollouts["role_changes"]))),
        ("longest write gap p50, A", fmt_ms(rollouts["gap_p50_ms"]),
         fmt_ms(kills["gap_p50_ms"]), "", ""),
        ("longest write gap p99, A", fmt_ms(rollouts["gap_p99_ms"]),
         fmt_ms(kills["gap_p99_ms"]), "<=1 s / <=5 s",
         verdict((rollouts["gap_p99_ms"] or math.inf) <= 1000
                 and (kills["gap_p99_ms"] or math.inf) <= 5000)),
        ("longest acked gap p99, B", fmt_ms(rollouts["gap_b_p99_ms"]),
         fmt_ms(kills["gap_b_p99_ms"]), "", ""),
        ("write pause in FAILOVER p99", fmt_ms(result["failover_pause_p99_ms"]), "",
         "<=200 ms", "n/a: no switchover seen" if not switch_gaps
         else verdict(result["failover_pause_p99_ms"] <= 200)),
        ("primaries at once (max)", str(rollouts["max_primaries"]), str(kills["max_primaries"]),
         "<=1", verdict(result["max_primaries_at_once"] <= 1)),
        ("events settled in time", f"{rollouts['settled']}/{rollouts['count']}",
         f"{kills['settled']}/{kills['count']}", "all",
         verdict(rollouts["settled"] == rollouts["count"] and kills["settled"] == kills["count"])),
    ]
    header = ("", f"rollouts ({rollouts['count']})", f"kills ({kills['count']})", "target", "")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    for row in [header] + rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print(f"acked: A {result['acked']['a']}, B {result['acked']['b']}; "
          f"lost outside events: A {result['lost_outside_events']['a']}, "
          f"B {result['lost_outside_events']['b']}; failures: A {result['failed']['a']}, "
          f"B {result['failed']['b']}")
    print(f"ROLE polled {result['role_rounds']} times every {result['role_interval_ms']:.0f} ms: "
          f"{result['promotions']} promotions, {result['demotions']} demotions, "
          f"at most {result['max_primaries_at_once']} pods answering master in one round")
    if not promotions:
        print("no pod went from replica to primary: the FAILOVER pause cannot be measured")


if __name__ == "__main__":
    main(*sys.argv[1:5])
