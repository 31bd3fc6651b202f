"""Records when what the primary Service's routing depends on changed, for hack/bench-failover.

Writes one JSON line per observation to OUT, each with `t` (Unix seconds, this machine's clock,
the one the operator's log and the ledger clients use):
- `pods`: a watch event of one of the instance's pods: its name, role label and IP;
- `slices`: a watch event of the `<name>` Service's EndpointSlices: its ready addresses;
- `proxy`: kube-proxy finished a sync of its rules (its metric
  kubeproxy_sync_proxy_rules_last_timestamp_seconds changed; polled every 20 ms, and `t` is
  the metric's own value).
Runs until terminated.

    python3 failover_timeline.py NAMESPACE NAME KUBECTL OUT [KUBE_PROXY_METRICS_URL]
"""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

ROLE = "redis.github.com/role"


def main(namespace, name, kubectl, out, metrics_url=None):
    lock = threading.Lock()
    sink = open(out, "a", buffering=1)

    def record(source, **fields):
        with lock:
            sink.write(json.dumps({"t": fields.pop("t", time.time()), "source": source, **fields}) + "\n")

    children = []

    def stop(*_):
        for child in children:
            child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)

    def watch(source, kind, selector, parse):
        # `-o json` prints one object per event, back to back: decoded as they complete.
        proc = subprocess.Popen(
            [kubectl, "-n", namespace, "get", kind, "-l", selector, "--watch", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        children.append(proc)
        decoder, buffer = json.JSONDecoder(), ""
        for line in proc.stdout:
            buffer += line
            try:
                obj, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            buffer = buffer.lstrip()[end:]
            record(source, **parse(obj))

    def pod(obj):
        return {"pod": obj["metadata"]["name"],
                "role": obj["metadata"].get("labels", {}).get(ROLE, ""),
                "ip": obj.get("status", {}).get("podIP", "")}

    def endpoint_slice(obj):
        return {"ready": [e["addresses"][0] for e in obj.get("endpoints") or []
                          if e.get("conditions", {}).get("ready")]}

    instance = f"app.kubernetes.io/name=redis,app.kubernetes.io/instance={name}"
    threads = [
        threading.Thread(target=watch, daemon=True, args=("pods", "pods", instance, pod)),
        threading.Thread(target=watch, daemon=True, args=(
            "slices", "endpointslices", f"kubernetes.io/service-name={name}", endpoint_slice)),
    ]
    for thread in threads:
        thread.start()
    last = None
    pattern = re.compile(
        r'^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} (\S+)', re.M)
    while True:
        if metrics_url:
            try:
                with urllib.request.urlopen(metrics_url, timeout=1) as reply:
                    found = pattern.search(reply.read().decode())
                if found and found.group(1) != last:
                    if last is not None:
                        record("proxy", t=float(found.group(1)))
                    last = found.group(1)
            except OSError:
                pass
        time.sleep(0.02)


if __name__ == "__main__":
    main(*sys.argv[1:6])
