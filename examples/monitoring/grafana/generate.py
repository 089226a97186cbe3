#!/usr/bin/env python3
"""Writes the Grafana dashboards of tower-perf (dashboards/*.json) from the panel lists below.

Edit the lists, run `python3 examples/monitoring/grafana/generate.py`, commit the JSON; the
integration test (tests/monitoring.rs) evaluates every expression against a real Prometheus
scraping the demo. Expressions use `$instance` (the instance variable) and `$__rate_interval`;
every panel and query takes its datasource from the `datasource` variable.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="tower-perf", instance=~"$instance"'
RI = "$__rate_interval"


def rate(metric, match="", by=""):
    sel = SEL + (", " + match if match else "")
    inner = f"rate({metric}{{{sel}}}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, metric, by, match=""):
    sel = SEL + (", " + match if match else "")
    return (f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{sel}}}[{RI}])))")


def panel(title, unit, targets, description, kind="timeseries"):
    return {"title": title, "unit": unit, "targets": targets, "description": description,
            "kind": kind}


def t(expr, legend):
    return (expr, legend)


REQ = "http_server_request_duration_seconds"
CACHE = "tower_perf_cache_requests_total"

OVERVIEW = [
    ("Traffic and errors", [
        panel("Requests per route", "reqps",
              [t(rate(REQ + "_count", by="http_route"), "{{http_route}}")],
              "Requests per second by route template (slow-request tracker)."),
        panel("Responses by status", "reqps",
              [t(rate(REQ + "_count", 'http_response_status_code!=""',
                      by="http_response_status_code"), "{{http_response_status_code}}")],
              "Responses per second by status code; 499 is a client that left first."),
        panel("Error ratio by route", "percentunit",
              [t(rate(REQ + "_count", 'http_response_status_code=~"5..|"', by="http_route")
                 + " / " + rate(REQ + "_count", by="http_route"), "{{http_route}}")],
              "Share of each route's requests answered 5xx or failing without a response "
              "(alert TowerPerfHighErrorRate over 5%)."),
        panel("Slow requests per route", "reqps",
              [t(rate("tower_perf_slow_requests_total", by="http_route"), "{{http_route}}")],
              "Requests at or over their route's slow threshold, per second; /admin/stats "
              "shows the latest with their Server-Timing phases."),
    ]),
    ("Latency", [
        panel("p50 latency per route", "s",
              [t(quantile(0.5, REQ, "http_route"), "{{http_route}}")],
              "Median request duration (to the end of the response body) by route."),
        panel("p95 latency per route", "s",
              [t(quantile(0.95, REQ, "http_route"), "{{http_route}}")],
              "95th percentile by route (alert TowerPerfHighLatencyP95 over 1 s)."),
        panel("p99 latency per route", "s",
              [t(quantile(0.99, REQ, "http_route"), "{{http_route}}")],
              "99th percentile by route."),
    ]),
    ("Saturation", [
        panel("Concurrency: limit, in flight, waiting", "short",
              [t(f"sum(tower_perf_concurrency_limit{{{SEL}}})", "limit"),
               t(f"sum(tower_perf_queue_in_flight{{{SEL}}})", "in flight"),
               t(f"sum(tower_perf_queue_size{{{SEL}}})", "waiting"),
               t(f"sum(http_server_active_requests{{{SEL}}})", "active requests")],
              "The priority queue's limit against the requests holding a permit and those "
              "waiting; active requests are counted by the slow-request tracker."),
        panel("CPU", "short",
              [t(f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "{{instance}}")],
              "CPU cores used by the process (alert TowerPerfCpuSaturated)."),
        panel("Resident memory", "bytes",
              [t(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")],
              "Resident set size (alert TowerPerfMemoryHigh)."),
        panel("Requests shed", "reqps",
              [t(rate("tower_perf_queue_requests_total", 'queue_result=~"rejected|timeout"',
                      by="priority"), "{{priority}}")],
              "503s of the priority queue per second, by class (alert TowerPerfQueueShedding)."),
    ]),
]

LAYERS = [
    ("Response cache", [
        panel("Hit ratio of cacheable requests, by tier", "percentunit",
              [t(rate(CACHE, 'cache_result=~"hit|stale"', by="cache_tier") + " / "
                 + rate(CACHE, 'cache_result=~"hit|stale|miss"', by="cache_tier"),
                 "{{cache_tier}}")],
              "(hit + stale) / (hit + stale + miss): bypassed requests and uncacheable "
              "responses (no-store, private, the streamed export) are not cache candidates "
              "(alert TowerPerfCacheHitRatioLow under 50%)."),
        panel("Requests by result", "reqps",
              [t(rate(CACHE, by="cache_tier, cache_result"), "{{cache_tier}} {{cache_result}}")],
              "What the cache did per second: hit, stale, miss, uncacheable, bypass, error."),
        panel("Bytes held", "bytes",
              [t(f"sum by (cache_tier) (tower_perf_cache_size_bytes{{{SEL}}})", "{{cache_tier}}")],
              "Bytes held by the memory tier (bounded by cache.max_mb)."),
        panel("Entries", "short",
              [t(f"sum by (cache_tier) (tower_perf_cache_entries{{{SEL}}})", "{{cache_tier}}")],
              "Entries held by the memory tier."),
        panel("Evictions by cause", "short",
              [t(f"sum by (cause) (increase(tower_perf_cache_evictions_total{{{SEL}}}[{RI}]))",
                 "{{cause}}")],
              "Entries removed: expired, size (over the budget), explicit (purges), replaced."),
        panel("Purges", "short",
              [t(f"sum by (purge_target) (increase(tower_perf_cache_purges_total{{{SEL}}}[{RI}]))",
                 "{{purge_target}}")],
              "Purges asked of the instances, by target: tag, uri, prefix, all."),
    ]),
    ("Compression", [
        panel("Compression ratio by coding", "short",
              [t(f'{rate("tower_perf_compression_input_bytes_total", by="encoding")} / '
                 f'{rate("tower_perf_compression_output_bytes_total", by="encoding")}',
                 "{{encoding}}")],
              "Body bytes in per byte out, by content coding."),
        panel("Bytes in and out by coding", "Bps",
              [t(rate("tower_perf_compression_input_bytes_total", by="encoding"), "{{encoding}} in"),
               t(rate("tower_perf_compression_output_bytes_total", by="encoding"),
                 "{{encoding}} out")],
              "Bytes given to the encoders and bytes they produced, per second."),
        panel("Levels", "short",
              [t(f"max by (encoding) (tower_perf_compression_level{{{SEL}}})", "{{encoding}}")],
              "The level chosen for the latest response in each coding; it falls with load."),
        panel("Decisions (load tier)", "reqps",
              [t(rate("tower_perf_compression_responses_total", by="decision"), "{{decision}}")],
              "Why responses were or were not compressed: idle, normal, busy and large_body "
              "are the load tiers; saturated means compression was shed to save CPU."),
    ]),
    ("Priority queue", [
        panel("Limit, in flight, waiting", "short",
              [t(f"sum(tower_perf_concurrency_limit{{{SEL}}})", "limit"),
               t(f"sum(tower_perf_queue_in_flight{{{SEL}}})", "in flight"),
               t(f"sum by (priority) (tower_perf_queue_size{{{SEL}}})", "waiting {{priority}}")],
              "The concurrency limit (fixed, or where the adaptive limit stands; alert "
              "TowerPerfConcurrencyLimitAtMinimum), permits held and requests waiting by class."),
        panel("Wait p95 by class", "s",
              [t(quantile(0.95, "tower_perf_queue_wait_duration_seconds", "priority",
                          'queue_result="admitted"'), "{{priority}}")],
              "95th percentile of the time admitted requests waited, by class."),
        panel("Results by class", "reqps",
              [t(rate("tower_perf_queue_requests_total", by="priority, queue_result"),
                 "{{priority}} {{queue_result}}")],
              "Admitted, rejected (queue full), timeout (waited too long), canceled."),
        panel("Sheds by class", "reqps",
              [t(rate("tower_perf_queue_requests_total", 'queue_result=~"rejected|timeout"',
                      by="priority"), "{{priority}}")],
              "503s of the queue per second by class (alert TowerPerfQueueShedding)."),
    ]),
    ("Circuit breakers", [
        panel("Breaker state", "short",
              [t(f"max by (breaker, state) (tower_perf_circuit_breaker_state{{{SEL}}}) > 0",
                 "{{breaker}} {{state}}")],
              "The state each breaker is in (alert TowerPerfCircuitBreakerOpen)."),
        panel("Transitions", "short",
              [t(f"sum by (breaker, state) "
                 f"(increase(tower_perf_circuit_breaker_transitions_total{{{SEL}}}[{RI}]))",
                 "{{breaker}} to {{state}}")],
              "State changes by breaker and state entered."),
        panel("Calls by result", "reqps",
              [t(rate("tower_perf_circuit_breaker_calls_total", by="breaker, result"),
                 "{{breaker}} {{result}}")],
              "Calls seen by each breaker: success, failure, slow, rejected (while open)."),
    ]),
    ("Rate limit", [
        panel("Decisions", "reqps",
              [t(rate("tower_perf_rate_limit_decisions_total", by="decision"), "{{decision}}")],
              "Allowed, limited (429) and bypassed requests per second "
              "(alert TowerPerfRateLimitRejections)."),
        panel("Share limited", "percentunit",
              [t(rate("tower_perf_rate_limit_decisions_total", 'decision="limited"')
                 + " / " + rate("tower_perf_rate_limit_decisions_total"), "limited")],
              "Share of the rate limiter's decisions that were 429."),
    ]),
    ("Redis", [
        panel("Redis calls by result", "reqps",
              [t(rate("tower_perf_redis_calls_total", by="result"), "{{result}}")],
              "Calls of the Redis link: ok, timeout, error, skipped (breaker open; alert "
              "TowerPerfRedisErrors). Needs a Redis tier or the shared rate limit."),
        panel("Redis link breaker", "short",
              [t(f"max by (instance) (tower_perf_redis_link_open{{{SEL}}})", "{{instance}}")],
              "1 while the link's breaker is open and Redis is skipped "
              "(alert TowerPerfRedisLinkOpen)."),
        panel("Redis tier results", "reqps",
              [t(rate(CACHE, 'cache_tier="redis"', by="cache_result"), "{{cache_result}}")],
              "What the cache's Redis tier answered: hit, miss, error."),
        panel("Shared rate-limit decisions", "reqps",
              [t(rate("tower_perf_rate_limit_shared_decisions_total", by="decided_by"),
                 "{{decided_by}}")],
              "Decisions of the shared quota by who made them: redis, or the local fallback."),
    ]),
    ("Process", [
        panel("CPU cores", "short",
              [t(f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "{{instance}}")],
              "CPU seconds per second (metrics-process)."),
        panel("Resident memory", "bytes",
              [t(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")],
              "Resident set size."),
        panel("Open files", "short",
              [t(f"process_open_fds{{{SEL}}}", "open {{instance}}"),
               t(f"process_max_fds{{{SEL}}}", "max {{instance}}")],
              "Open file descriptors (sockets included) against the limit."),
        panel("Threads", "short",
              [t(f"process_threads{{{SEL}}}", "{{instance}}")],
              "OS threads of the process."),
    ]),
]


def templating():
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(up{job="tower-perf"}, instance)',
                   "refId": "instance"},
         "definition": 'label_values(up{job="tower-perf"}, instance)',
         "refresh": 2, "multi": True, "includeAll": True, "allValue": ".+",
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
         "hide": 0, "sort": 1},
    ]}


def dashboard(uid, title, rows, description):
    panels, next_id, y = [], 1, 0
    for row_title, row_panels in rows:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for i, p in enumerate(row_panels):
            w = 12 if len(row_panels) in (2, 4) else 8
            per_line = 24 // w
            x = (i % per_line) * w
            py = y + (i // per_line) * 8
            panels.append({
                "id": next_id, "type": p["kind"], "title": p["title"],
                "description": p["description"], "datasource": DS,
                "gridPos": {"h": 8, "w": w, "x": x, "y": py},
                "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                       "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}},
                "targets": [{"refId": chr(ord("A") + k), "datasource": DS, "expr": expr,
                             "legendFormat": legend, "range": True}
                            for k, (expr, legend) in enumerate(p["targets"])],
            })
            next_id += 1
        y += ((len(row_panels) - 1) // (24 // (12 if len(row_panels) in (2, 4) else 8)) + 1) * 8
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["tower-perf"], "timezone": "", "editable": True, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": templating(), "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["tower-perf"], "title": "tower-perf",
                   "asDropdown": True}],
        "panels": panels,
    }


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
    os.makedirs(out, exist_ok=True)
    for name, dash in [
        ("tower-perf-overview.json", dashboard(
            "tower-perf-overview", "tower-perf: overview", OVERVIEW,
            "Traffic, errors, latency percentiles per route and saturation.")),
        ("tower-perf-layers.json", dashboard(
            "tower-perf-layers", "tower-perf: layers", LAYERS,
            "One row per layer: cache, compression, priority queue, circuit breakers, "
            "rate limit, Redis, and the process.")),
    ]:
        with open(os.path.join(out, name), "w") as f:
            json.dump(dash, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
