"""Turns one hack/bench-failover run into the issue's table and target/bench-failover.json.

Inputs (in the run's work directory): write-a.json and write-b.json (`ledger write`, variants A
and B), verify-a.json and verify-b.json (`ledger verify`), roles.json (`ledger roles`) and
events.jsonl (one line per rollout or kill the script drove: name, kind, settled, seconds).
Every figure is derived from those files; nothing is assumed about the operator.

When the run started the operator itself, its log (operator.log) and timeline.jsonl
(failover_timeline.py) split each switchover's gap: FAILOVER sent, seen over (the operator's
`took_ms`), primary label moved, the `<name>` EndpointSlices listing the new primary, kube-proxy's
next sync, and the client's first acknowledged write after.
"""

import re
from datetime import datetime

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


LOG_LINE = re.compile(r"^(\S+Z)\s+\w+\s+(.*)$")


def unix(stamp):
    """RFC 3339 with nanoseconds (the operator's log) to Unix seconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def fields(text):
    return dict(re.findall(r"(\w+)=(\S+)", text))


def switchovers(work):
    """Each FAILOVER the operator sent, with when its target was labelled primary (before it),
    when it was seen over, and when the old primary was labelled replica (after it)."""
    log = work / "operator.log"
    if not log.exists():
        return []
    found, labelled_primary = [], {}
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        at, text = unix(match.group(1)), match.group(2)
        f = fields(text)
        if text.startswith("labelled primary"):
            labelled_primary[f.get("pod")] = at
        if text.startswith("FAILOVER TO the replica"):
            found.append({"from": f.get("from"), "to": f.get("to"), "sent": at,
                          "labelled": labelled_primary.get(f.get("to"))})
        elif text.startswith("FAILOVER over") and found and "over" not in found[-1]:
            found[-1]["over"] = at
            found[-1]["took_ms"] = float(f.get("took_ms", "nan"))
        elif (text.startswith("labelled replica") and found and "demoted" not in found[-1]
              and f.get("pod") == found[-1]["from"]):
            found[-1]["demoted"] = at
    return found


def timeline(work):
    path = work / "timeline.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def split_gap(sw, lines, writer):
    """Milliseconds from FAILOVER sent to each later link of the chain (None: not seen)."""
    sent = sw["sent"]
    ip_of = {}
    for line in lines:
        if line["source"] == "pods" and line["t"] <= sent and line.get("ip"):
            ip_of[line["pod"]] = line["ip"]
    new_ip, old_ip = ip_of.get(sw["to"]), ip_of.get(sw["from"])

    def first(source, after, test):
        return next((x["t"] for x in lines
                     if x["source"] == source and x["t"] >= after and test(x)), None)

    # The target is labelled primary before FAILOVER (negative figures below), so that the
    # proxies route to it by the time it takes the role; the old primary leaves after.
    labelled = sw.get("labelled")
    since = labelled if labelled is not None else sent
    slice_new = first("slices", since, lambda x: new_ip in x["ready"]) if new_ip else None
    slice_old_gone = first("slices", sent, lambda x: old_ip not in x["ready"]) if old_ip else None
    proxy = first("proxy", slice_new, lambda x: True) if slice_new else None
    proxy_old_gone = first("proxy", slice_old_gone, lambda x: True) if slice_old_gone else None
    base = writer["started_unix_ms"] / 1000
    rel = (sent - base) * 1000
    # The client's gap around the switchover: the longest listed gap overlapping it.
    # Only gaps that began within 1.5 s of the FAILOVER: the next event may come seconds later.
    around = [g for g in writer["over_threshold"]
              if g["end_ms"] >= rel and g["start_ms"] <= rel + 1500]
    gap = max(around, key=lambda g: g["ms"]) if around else None
    end = sw.get("over", sent + 5) + 0.1
    held = [w["ms"] for w in writer.get("slow_writes", [])
            if w["outcome"] in ("ok", "readonly")
            and w["start_ms"] <= (end - base) * 1000 and w["start_ms"] + w["ms"] >= rel]

    def ms(t):
        return None if t is None else round((t - sent) * 1000, 1)

    return {
        "from": sw["from"], "to": sw["to"],
        "operator_pause_ms": sw.get("took_ms"),
        "client_pause_ms": max(held) if held else None,
        "label_ms": ms(labelled),
        "slice_new_ms": ms(slice_new),
        "proxy_sync_ms": ms(proxy),
        "demoted_ms": ms(sw.get("demoted")),
        "slice_old_gone_ms": ms(slice_old_gone),
        "proxy_old_gone_ms": ms(proxy_old_gone),
        # The gap FAILOVER opened, if one of 50 ms or more began within 200 ms of it.
        "first_ack_ms": next((round(g["end_ms"] - rel, 1)
                              for g in sorted(around, key=lambda g: g["start_ms"])
                              if g["start_ms"] <= rel + 200), None),
        "gap_ms": None if gap is None else round(gap["ms"], 1),
    }


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
    lines = timeline(work)
    splits = [split_gap(sw, lines, writers["a"]) for sw in switchovers(work)]

    def p(key, q):
        return percentile([x[key] for x in splits if x[key] is not None], q)

    # Writes below the slow threshold were not held: the pause was shorter than it.
    slow_floor = writers["a"].get("slow_threshold_ms", 0)
    client_pauses = [x["client_pause_ms"] or 0 for x in splits]
    result = {
        **meta,
        "events": events,
        "rollouts": rollouts,
        "kills": kills,
        "lost_outside_events": {v: lost[v].get("outside-events", 0) for v in ("a", "b")},
        "acked": {v: writers[v]["acked"] for v in ("a", "b")},
        "failed": {v: writers[v]["failed"] for v in ("a", "b")},
        "writer_targets": {v: writers[v]["targets"] for v in ("a", "b")},
        "gap_around_promotion_ms": switch_gaps,
        "switchovers": splits,
        "failover_pause_client_p99_ms": percentile(client_pauses, 99),
        "failover_pause_operator_p99_ms": p("operator_pause_ms", 99),
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
        ("FAILOVER pause p99, client (held writes)",
         fmt_ms(max(result["failover_pause_client_p99_ms"] or 0, 0))
         if splits else "-", "", "<=200 ms",
         "n/a: no switchover seen" if not splits
         else verdict(result["failover_pause_client_p99_ms"] <= 200)),
        ("FAILOVER pause p99, operator (sent..over)",
         fmt_ms(result["failover_pause_operator_p99_ms"]), "", "<=200 ms",
         "n/a" if result["failover_pause_operator_p99_ms"] is None
         else verdict(result["failover_pause_operator_p99_ms"] <= 200)),
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
    if splits:
        print(f"switchovers ({len(splits)}), ms after FAILOVER was sent (negative: before), p50 / p99 "
              f"(client pause: writes held >= {slow_floor:.0f} ms, else 0):")
        for key, label in [("client_pause_ms", "longest held write (client)"),
                           ("operator_pause_ms", "FAILOVER seen over (operator)"),
                           ("label_ms", "target labelled primary"),
                           ("slice_new_ms", "EndpointSlice lists the target"),
                           ("proxy_sync_ms", "kube-proxy sync after that"),
                           ("demoted_ms", "old primary labelled replica"),
                           ("slice_old_gone_ms", "EndpointSlice drops the old primary"),
                           ("proxy_old_gone_ms", "kube-proxy sync after that"),
                           ("first_ack_ms", "end of FAILOVER's gap (if >= 50 ms)"),
                           ("gap_ms", "client's gap around it")]:
            print(f"  {label:40} {fmt_ms(p(key, 50)):>8} / {fmt_ms(p(key, 99)):>8}")
    if not promotions:
        print("no pod went from replica to primary: the FAILOVER pause cannot be measured")


if __name__ == "__main__":
    main(*sys.argv[1:5])
