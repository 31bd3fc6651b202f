#!/usr/bin/env python3
"""Parsing and arithmetic for hack/bench-scale; the shell script drives the cluster.

  bench_scale.py create API PKI N NAMESPACES      create namespaces bench-<j> and N RedisInstances
  bench_scale.py edit API PKI N NAMESPACES EDITS MAXMEMORY
                                                   patch maxmemory of EDITS instances spread over N
  bench_scale.py ready API PKI                     print "<ready> <total>" RedisInstances
  bench_scale.py ready-statefulsets API PKI        print "<ready> <total>" StatefulSets (all pods ready)
  bench_scale.py observed URL N                    exit 0 once the operator's /instances lists N observed
  bench_scale.py pods API PKI                      print every pod's "ns/name uid restarts"

API is the apiserver's URL; PKI the cluster's pki directory (admin.crt, admin.key, ca.crt).
  bench_scale.py analyse PHASES AUDIT OUT N [BEFORE AFTER]
                                                   add N's figures (from the audit log) to OUT; with
                                                   two /metrics scrapes, the step stages between
  bench_scale.py table OUT                         print OUT as a table
"""

import glob
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

WRITES = {"create", "update", "patch", "delete", "deletecollection"}


class Api:
    """A minimal client of the apiserver as the cluster admin (no kubectl process per call)."""

    def __init__(self, url, pki):
        self.url = url
        self.ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
        self.ctx.load_cert_chain(f"{pki}/admin.crt", f"{pki}/admin.key")

    def call(self, method, path, body=None, content_type="application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, context=self.ctx, timeout=120) as response:
            return json.load(response)


RI_PATH = "/apis/redis.github.com/v1/namespaces/{ns}/redisinstances"


def instance(i, namespaces):
    """Namespace and name of instance i: spread round-robin over the namespaces."""
    return f"bench-{i % namespaces}", f"redis-{i}"


def cmd_create(url, pki, n, namespaces):
    """Creates the fleet like examples/redis-example.yaml, eight requests at a time."""
    api, n, namespaces = Api(url, pki), int(n), int(namespaces)
    for j in range(namespaces):
        try:
            api.call("POST", "/api/v1/namespaces",
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{j}"}})
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise

    def create(i):
        ns, name = instance(i, namespaces)
        api.call("POST", RI_PATH.format(ns=ns), {
            "apiVersion": "redis.github.com/v1", "kind": "RedisInstance",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"image": "redis:7.0", "replicas": 1,
                     "storage": {"size": "1Gi", "storageClassName": "standard"},
                     "config": {"maxmemory": "100mb", "maxmemory-policy": "allkeys-lru"}}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))


def cmd_edit(url, pki, n, namespaces, edits, maxmemory):
    """Sets maxmemory to <MAXMEMORY+k>mb on instance k*N/EDITS, one edit every 50 ms: latency, not
    a burst, is what is measured."""
    api, n, edits, base = Api(url, pki), int(n), int(edits), int(maxmemory)
    for k in range(edits):
        ns, name = instance(k * n // edits, int(namespaces))
        api.call("PATCH", RI_PATH.format(ns=ns) + "/" + name,
                 {"spec": {"config": {"maxmemory": f"{base + k}mb"}}},
                 "application/merge-patch+json")
        time.sleep(0.05)


def cmd_ready(url, pki):
    """Counts RedisInstances whose Ready condition is True (the cold start's finish line)."""
    items = Api(url, pki).call("GET", "/apis/redis.github.com/v1/redisinstances")["items"]
    ready = sum(1 for i in items
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (i.get("status") or {}).get("conditions") or []))
    print(ready, len(items))


def cmd_ready_statefulsets(url, pki):
    """Counts StatefulSets with every pod ready: the cold floor's finish line (it writes no
    status)."""
    items = Api(url, pki).call("GET", "/apis/apps/v1/statefulsets")["items"]
    ready = sum(1 for s in items
                if (s.get("status") or {}).get("readyReplicas", 0)
                >= (s.get("spec") or {}).get("replicas", 1))
    print(ready, len(items))


def cmd_observed(url, n):
    """True once the restarted operator has read every instance's live StatefulSet."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            snapshots = json.load(response)
    except Exception:  # not serving yet
        return 1
    seen = sum(1 for s in snapshots.values() if s.get("config_hash"))
    return 0 if seen >= int(n) else 1


def cmd_pods(url, pki):
    """Prints pod identities, so a restart that recreated or restarted a pod shows as a diff."""
    for pod in Api(url, pki).call("GET", "/api/v1/pods")["items"]:
        meta = pod["metadata"]
        restarts = sum(c.get("restartCount", 0)
                       for c in (pod.get("status") or {}).get("containerStatuses") or [])
        print(f"{meta['namespace']}/{meta['name']} {meta['uid']} {restarts}")


def ts(text):
    """An audit timestamp (RFC 3339, microseconds) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def load_requests(audit_path, users, operator_user):
    """One record per request (by auditID) of the given users: the audit log repeats a request
    for each stage (a watch: ResponseStarted, then ResponseComplete when it ends). A request
    whose User-Agent is the operator's (redis-operator/<version>) counts as the operator's
    whatever credentials it used."""
    needles = [f'"username":"{u}"'.encode() for u in users] + [b'"userAgent":"redis-operator/']
    requests = {}
    # The apiserver rotates the log every 100 MB into audit-<time>.log beside it.
    directory, name = os.path.split(audit_path)
    stem = name.removesuffix(".log")
    paths = sorted(glob.glob(os.path.join(directory, stem + "-*.log"))) + [audit_path]
    for path in paths:
        with open(path, "rb") as f:
            add_requests(f, needles, users, operator_user, requests)
    return list(requests.values())


def add_requests(lines, needles, users, operator_user, requests):
    """load_requests for one file."""
    for line in lines:
        if not any(n in line for n in needles):
            continue
        event = json.loads(line)
        user = event.get("user", {}).get("username")
        if event.get("userAgent", "").startswith("redis-operator/"):
            user = operator_user
        if user not in users:
            continue
        ref = event.get("objectRef") or {}
        req = requests.setdefault(event["auditID"], {
            "user": user,
            "agent": event.get("userAgent", ""),
            "verb": event["verb"],
            "resource": ref.get("resource", ""),
            "subresource": ref.get("subresource", ""),
            "namespace": ref.get("namespace", ""),
            "name": ref.get("name", ""),
            "received": ts(event["requestReceivedTimestamp"]),
            "done": None,
            "code": None,
        })
        if event.get("stage") == "ResponseComplete":
            req["done"] = ts(event["stageTimestamp"])
            req["code"] = (event.get("responseStatus") or {}).get("code")


def counts(requests, start, end):
    """Requests received in [start, end): watches apart from the rest, writes, and by verb. The
    leader-election Lease's renewals, a few a minute per operator whatever N, are counted apart."""
    window = [r for r in requests if start <= r["received"] < end]
    leases = sum(1 for r in window if r["resource"] == "leases")
    window = [r for r in window if r["resource"] != "leases"]
    by_verb = {}
    for r in window:
        key = r["verb"] + (f" {r['resource']}/{r['subresource']}" if r["subresource"] else f" {r['resource']}")
        by_verb[key] = by_verb.get(key, 0) + 1
    return {
        "total": len(window),
        "watches": sum(1 for r in window if r["verb"] == "watch"),
        "non_watch": sum(1 for r in window if r["verb"] != "watch"),
        "writes": sum(1 for r in window if r["verb"] in WRITES),
        "leases": leases,
        "by_verb": dict(sorted(by_verb.items(), key=lambda kv: -kv[1])),
    }


def percentile(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    values = sorted(values)
    rank = max(1, -(-len(values) * p // 100))
    return values[int(rank) - 1]


def landed(request):
    """A request the API server carried out (answered 2xx): a write refused with a conflict is
    no answer to an edit; the retry that lands is."""
    return request["code"] is not None and 200 <= request["code"] < 300


def edit_latencies(edits, writes_by_user, user, start, end):
    """Milliseconds from each RedisInstance patch being received to the first StatefulSet write
    by `user` for that instance that landed after it; and how many edits got none."""
    ms, missed = [], 0
    for e in edits:
        if not (start <= e["received"] < end):
            continue
        later = [w["done"] for w in writes_by_user.get((user, e["namespace"], e["name"]), [])
                 if w["done"] is not None and landed(w)
                 and w["received"] >= e["received"] and w["received"] < end]
        if later:
            ms.append((min(later) - e["received"]) * 1000)
        else:
            missed += 1
    return ms, missed


STAGE_LINE = re.compile(r'^redis_operator_step_stage_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)$')


def read_stages(path):
    """The step stage histograms of one /metrics scrape: {(stage, kind): {"sum", "count",
    "buckets": {le: cumulative count}}}."""
    stages = {}
    with open(path) as f:
        for line in f:
            m = STAGE_LINE.match(line.strip())
            if not m:
                continue
            part, labels, value = m.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            h = stages.setdefault((labels["stage"], labels.get("kind", "")),
                                  {"sum": 0.0, "count": 0.0, "buckets": {}})
            if part == "bucket":
                h["buckets"][float(labels["le"])] = float(value)
            else:
                h[part] = float(value)
    return stages


def bucket_quantile(q, buckets, count):
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    if count <= 0:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for le in sorted(buckets):
        if buckets[le] >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(buckets[le] - below, 1e-9)
        lower, below = le, buckets[le]
    return lower


STAGE_ORDER = ["route", "deliver", "queue", "permit", "observe", "plan", "decide", "perform",
               "report", "write_gate", "write", "event_to_write"]


def stage_rank(name):
    """Where a stage ("write StatefulSet" included) comes in a step, for printing."""
    stage, _, kind = name.partition(" ")
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), kind)


def stage_breakdown(before_path, after_path):
    """Count, mean, p50 and p99 (ms) of each stage between two scrapes."""
    before, after = read_stages(before_path), read_stages(after_path)
    out = {}
    for key, h in after.items():
        b = before.get(key, {"sum": 0.0, "count": 0.0, "buckets": {}})
        count = h["count"] - b["count"]
        if count <= 0:
            continue
        buckets = {le: v - b["buckets"].get(le, 0.0) for le, v in h["buckets"].items()}
        name = key[0] + (f" {key[1]}" if key[1] else "")
        out[name] = {
            "count": int(count),
            "mean_ms": round((h["sum"] - b["sum"]) / count * 1000, 2),
            "p50_ms": round(bucket_quantile(0.5, buckets, count) * 1000, 2),
            "p99_ms": round(bucket_quantile(0.99, buckets, count) * 1000, 2),
        }
    return out


def cmd_analyse(phases_path, audit_path, out_path, n, before=None, after=None):
    """Turns the phase marks and the audit log into N's entry of target/bench-scale.json."""
    with open(phases_path) as f:
        ph = json.load(f)
    stages = stage_breakdown(before, after) if before and after else None
    op, floor, admin = ph["operator_user"], ph["floor_user"], ph["admin_user"]
    reqs = load_requests(audit_path, {op, floor, admin}, op)
    ops = [r for r in reqs if r["user"] == op]
    n_int = int(n)

    cold = counts(ops, ph["cold_start"], ph["cold_ready"])
    # When the operator had written every instance's StatefulSet: the rest of the cold start is
    # the cluster's (claims, volumes, scheduling, pods) and the final status writes.
    sts_done = [r["done"] or r["received"] for r in ops
                if r["resource"] == "statefulsets" and r["verb"] in WRITES and not r["subresource"]
                and ph["cold_start"] <= r["received"] < ph["cold_ready"]]
    rest = counts(ops, ph["rest_start"], ph["rest_end"])
    restart = counts(ops, ph["restart_start"], ph["restart_observed"])
    restart_settled = counts(ops, ph["restart_start"], ph["restart_settled"])

    edits = [r for r in reqs if r["user"] == admin and r["resource"] == "redisinstances"
             and r["verb"] in ("patch", "update") and not r["subresource"]]
    sts_writes = {}
    for r in reqs:
        if r["resource"] == "statefulsets" and r["verb"] in WRITES and not r["subresource"]:
            sts_writes.setdefault((r["user"], r["namespace"], r["name"]), []).append(r)
    # The floor answers the same edits as the operator, in the same window.
    op_ms, op_missed = edit_latencies(edits, sts_writes, op, ph["edit_start"], ph["edit_end"])
    edit_conflicts = sum(1 for r in ops if r["verb"] in WRITES and r["code"] == 409
                         and r["resource"] != "leases"
                         and ph["edit_start"] <= r["received"] < ph["edit_end"])
    fl_ms, fl_missed = edit_latencies(edits, sts_writes, floor, ph["edit_start"], ph["edit_end"])

    def r1(x):
        return None if x is None else round(x, 1)

    cold_cpu = cold_start_cpu(ph)
    cold_seconds = ph["cold_ready"] - ph["cold_start"]
    # The same cold start with no operator, on a cluster of its own (absent with
    # BENCH_COLD_FLOOR=0).
    floor_cold = (ph["floor_cold_ready"] - ph["floor_cold_start"]
                  if "floor_cold_ready" in ph else None)

    entry = {
        "instances": n_int,
        "namespaces": ph["namespaces"],
        "create_seconds": round(ph["created"] - ph["cold_start"], 1),
        "cold_start_seconds": round(cold_seconds, 1),
        "floor_cold_start_seconds": r1(floor_cold),
        "floor_create_seconds": (round(ph["floor_created"] - ph["floor_cold_start"], 1)
                                 if floor_cold is not None else None),
        "cold_start_over_floor": round(cold_seconds / floor_cold, 2) if floor_cold else None,
        "cold_start_poll_seconds": ph["poll_seconds"],
        "statefulsets_written_seconds": (round(max(sts_done) - ph["cold_start"], 1)
                                         if sts_done else None),
        "cold_start_requests": cold["total"],
        "requests_per_instance": round(cold["total"] / n_int, 2),
        "requests_per_instance_by_verb": {k: round(v / n_int, 3) for k, v in cold["by_verb"].items()},
        "rss_peak_bytes": ph["rss_peak_bytes"],
        "rss_rest_bytes": ph["rss_rest_bytes"],
        "rss_peak_bytes_per_instance": round(ph["rss_peak_bytes"] / n_int),
        "rss_rest_bytes_per_instance": round(ph["rss_rest_bytes"] / n_int),
        "rest_seconds": round(ph["rest_end"] - ph["rest_start"], 1),
        "rest_requests": rest["non_watch"],
        "rest_watch_requests": rest["watches"],
        "rest_writes": rest["writes"],
        "rest_lease_requests": rest["leases"],
        "rest_by_verb": rest["by_verb"],
        "edits": ph["edits"],
        "edit_p50_ms": r1(percentile(op_ms, 50)),
        "edit_p99_ms": r1(percentile(op_ms, 99)),
        "edit_missed": op_missed,
        "edit_conflicts": edit_conflicts,
        "floor_p50_ms": r1(percentile(fl_ms, 50)),
        "floor_p99_ms": r1(percentile(fl_ms, 99)),
        "floor_missed": fl_missed,
        "edit_p99_over_floor": (round(percentile(op_ms, 99) / percentile(fl_ms, 99), 1)
                                if op_ms and fl_ms else None),
        "edit_p50_over_floor": (round(percentile(op_ms, 50) / percentile(fl_ms, 50), 1)
                                if op_ms and fl_ms else None),
        "floor_method": "same edits, same window",
        "stages": stages,
        "cold_start_cpu_seconds": cold_cpu,
        "restart_stop_seconds": round(ph["restart_start"] - ph["restart_stop"], 1),
        "restart_observe_seconds": round(ph["restart_observed"] - ph["restart_start"], 1),
        "restart_requests": restart["total"],
        "restart_by_verb": restart["by_verb"],
        "restart_writes": restart_settled["writes"],
        "restart_settle_seconds": round(ph["restart_settled"] - ph["restart_start"], 1),
        "restart_pod_restarts": ph["restart_pod_restarts"],
        "user_agents": sorted({r["agent"] for r in ops}),
    }
    try:
        with open(out_path) as f:
            results = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        results = {}
    results[str(n_int)] = entry
    with open(out_path + ".tmp", "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(out_path + ".tmp", out_path)


def cold_start_cpu(ph):
    """CPU seconds each process used during the cold start, and the machine's busy and total
    (all cores), from the cpu_cold_start_* and cpu_cold_ready_* marks; None without them."""
    start, end = "cpu_cold_start_", "cpu_cold_ready_"
    used = {}
    for key, value in ph.items():
        name = key[len(start):]
        if key.startswith(start) and isinstance(value, (int, float)) \
                and isinstance(ph.get(end + name), (int, float)):
            used[name] = round(ph[end + name] - value, 1)
    return used or None


ROWS = [
    ("cold start (s)", "cold_start_seconds"),
    ("  of which creating (s)", "create_seconds"),
    ("  all StatefulSets written (s)", "statefulsets_written_seconds"),
    ("cold start floor (s)", "floor_cold_start_seconds"),
    ("  of which creating (s)", "floor_create_seconds"),
    ("cold start / floor", "cold_start_over_floor"),
    ("API requests / instance", "requests_per_instance"),
    ("RSS peak (MiB)", "rss_peak_bytes"),
    ("RSS at rest (MiB)", "rss_rest_bytes"),
    ("RSS at rest / instance (KiB)", "rss_rest_bytes_per_instance"),
    ("at rest window (s)", "rest_seconds"),
    ("at rest requests (non-watch)", "rest_requests"),
    ("at rest watch requests", "rest_watch_requests"),
    ("at rest writes", "rest_writes"),
    ("at rest lease renewals (per operator)", "rest_lease_requests"),
    ("edit p50 (ms)", "edit_p50_ms"),
    ("edit p99 (ms)", "edit_p99_ms"),
    ("floor p50 (ms)", "floor_p50_ms"),
    ("floor p99 (ms)", "floor_p99_ms"),
    ("edit p50 / floor p50", "edit_p50_over_floor"),
    ("edit p99 / floor p99", "edit_p99_over_floor"),
    ("edits without a write (op/floor)", None),
    ("operator writes refused 409 in the edits", "edit_conflicts"),
    ("restart: time to observe all (s)", "restart_observe_seconds"),
    ("restart: requests until observed", "restart_requests"),
    ("restart: writes", "restart_writes"),
    ("restart: pod restarts", "restart_pod_restarts"),
]


def cmd_table(out_path):
    """Prints the results side by side, one column per N."""
    with open(out_path) as f:
        results = json.load(f)
    sizes = sorted(results, key=int)
    print(f"{'N':<34}" + "".join(f"{s:>14}" for s in sizes))
    for label, key in ROWS:
        cells = []
        for s in sizes:
            e = results[s]
            if key is None:
                v = f"{e.get('edit_missed')}/{e.get('floor_missed')}"
            else:
                v = e.get(key)
                if v is not None and key in ("rss_peak_bytes", "rss_rest_bytes"):
                    v = round(v / 2**20, 1)
                elif v is not None and key.endswith("per_instance") and key.startswith("rss"):
                    v = round(v / 1024, 1)
            cells.append(f"{'-' if v is None else v:>14}")
        print(f"{label:<34}" + "".join(cells))
    for s in sizes:
        cpu = results[s].get("cold_start_cpu_seconds")
        if not cpu:
            continue
        total = cpu.get("machine_total") or 0
        print(f"\nN={s}: CPU seconds during the cold start (share of the machine, all cores)")
        for name, used in sorted(cpu.items(), key=lambda kv: -kv[1]):
            if name == "machine_total":
                continue
            share = f"{100 * used / total:.0f} %" if total else "-"
            print(f"  {name:<26}{used:>10}{share:>8}")
    for s in sizes:
        stages = results[s].get("stages")
        if not stages:
            continue
        print(f"\nN={s}: step stages during the edits (ms; quantiles from histogram buckets)")
        print(f"  {'stage':<24}{'count':>8}{'mean':>10}{'p50':>10}{'p99':>10}")
        for name, st in sorted(stages.items(), key=lambda kv: stage_rank(kv[0])):
            print(f"  {name:<24}{st['count']:>8}{st['mean_ms']:>10}{st['p50_ms']:>10}{st['p99_ms']:>10}")


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "create":
        cmd_create(*args)
    elif cmd == "edit":
        cmd_edit(*args)
    elif cmd == "ready":
        cmd_ready(*args)
    elif cmd == "ready-statefulsets":
        cmd_ready_statefulsets(*args)
    elif cmd == "observed":
        return cmd_observed(*args)
    elif cmd == "pods":
        cmd_pods(*args)
    elif cmd == "analyse":
        cmd_analyse(*args)
    elif cmd == "table":
        cmd_table(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
