#!/usr/bin/env python3
"""Pool the rounds of several `coremesh-bench compare --scenarios flaky-sweep --sweep-rounds N`
runs: per concurrency, each contender's median p99 and req/s over every round of every run
given, and coremesh's against the best peer's.

    python3 pooled.py quick-5-rounds full-5-rounds quick-10-rounds
"""
import json
import statistics
import sys

rounds = {}
for run in sys.argv[1:]:
    with open(f"{run}/results.json") as f:
        results = json.load(f)
    scenarios = results["scenarios"]
    for scenario in scenarios if isinstance(scenarios, list) else scenarios.values():
        if scenario["key"] != "flaky-sweep":
            continue
        for row in scenario["rows"]:
            i = 1
            while f"sweep_round{i}" in row["loads"]:
                load = row["loads"][f"sweep_round{i}"]
                rounds.setdefault((row["point"], row["contender"]), []).append(
                    (load["latency"]["p99_us"], load["throughput_rps"])
                )
                i += 1

for point in sorted({p for p, _ in rounds}):
    med = {}
    for who in ("coremesh", "nginx", "haproxy"):
        values = rounds.get((point, who), [])
        if values:
            med[who] = (
                statistics.median(p99 for p99, _ in values),
                statistics.median(rps for _, rps in values),
            )
    peers = [med[w] for w in ("nginx", "haproxy") if w in med]
    if "coremesh" not in med or not peers:
        continue
    best_p99 = min(p for p, _ in peers)
    best_rps = max(r for _, r in peers)
    cm_p99, cm_rps = med["coremesh"]
    print(
        f"{point:3d} connections, {len(rounds[(point, 'coremesh')])} rounds: "
        + "; ".join(f"{w} p99 {p:.0f} µs, {r:.0f} req/s" for w, (p, r) in med.items())
        + f" -> coremesh p99 {cm_p99 / best_p99:.2f}x, req/s {cm_rps / best_rps:.2f}x the best peer's"
    )
