"""Turn a results dict into the markdown table, the PNG chart, and the README section."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

BEGIN = "<!-- bench-results:begin (written by benchmarks/run.py) -->"
END = "<!-- bench-results:end -->"


def _r(s: Dict[str, float], digits: int = 3) -> str:
    """median [p25-p75] of a summary."""
    if not s or s.get("n", 0) == 0 or math.isnan(s["median"]):
        return "-"
    return f"{s['median']:.{digits}f} [{s['p25']:.{digits}f}-{s['p75']:.{digits}f}]"


def _m(s: Dict[str, float], digits: int = 0) -> str:
    if not s or s.get("n", 0) == 0 or math.isnan(s["median"]):
        return "-"
    return f"{s['median']:.{digits}f}"


def _verdict(s: Optional[Dict[str, float]], target: Optional[float]) -> str:
    """ok: the median reaches the target; ~: it does not, but the target is inside the
    interquartile range (indistinguishable here); miss: even the upper quartile is below."""
    if not s or target is None or s.get("n", 0) == 0:
        return ""
    if s["median"] >= target:
        return " ok"
    return " ~" if s["p75"] >= target else " **miss**"


def fit_slope(samples: List[Dict[str, Any]], start_fraction: float) -> Optional[float]:
    """Least-squares slope of RSS (bytes per handshake) over the samples after a fraction of the run."""
    if not samples:
        return None
    first = samples[-1]["handshakes"] * start_fraction
    pts = [(s["handshakes"], s["rss"]) for s in samples if s["handshakes"] >= first]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def markdown(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    lines: List[str] = []
    add = lines.append
    add(f"Run: **{meta['mode']}** mode, {meta['date']}, sesscache {meta['sesscache']} at `{meta.get('git', '?')}`, "
        f"{meta.get('seconds', 0):.0f} s.  ")
    add(f"Machine: {meta['nproc']} cores (nproc), CPU `{meta['cpu']}`, Python {meta['python']}, "
        f"load average {meta.get('loadavg_start')} at the start and {meta.get('loadavg_end')} at the end "
        "(shared with other engineers' test runs).  ")
    add(f"OpenSSL: pyOpenSSL stack `{meta.get('openssl_pyopenssl')}` (cryptography {meta.get('cryptography')}, "
        f"pyOpenSSL {meta.get('pyopenssl')}); stdlib stack `{meta['openssl_stdlib']}`.")
    add("")
    add("Every ratio is the median of per-round ratios over interleaved rounds (one block of each "
        "arm per round, order shuffled), with the interquartile range in brackets. *pair* counts "
        "the whole connection (client and server in this process); *server* counts only the "
        "server's calls, which is where the cache works (the client's share is the same in every "
        "arm and only dilutes a ratio).")
    add("")
    if "resume" in results:
        _resume(results["resume"], add)
    if "events" in results:
        _events(results["events"], add)
    if "prefork" in results:
        _prefork(results["prefork"], add)
    if "redis" in results:
        _redis(results["redis"], add)
    if "memory" in results:
        _memory(results["memory"], add)
    if "walk" in results and not _error(results["walk"], add):
        import walk

        walk.markdown(results["walk"], add)
    return "\n".join(lines) + "\n"


def _error(section: Dict[str, Any], add) -> bool:
    if "error" in section:
        add(f"**failed:** `{section['error']}`")
        add("")
        return True
    return False


def _resume(res: Dict[str, Any], add) -> None:
    add("### 1. Resumed handshakes per second, relative to OpenSSL's internal cache")
    add("")
    if _error(res, add):
        return
    add("Verdicts: *ok* the median reaches the target; *~* it does not, but the target lies inside "
        "the interquartile range (indistinguishable on this machine); ***miss*** even the upper "
        "quartile is below it.")
    add("")
    add("`sesscache-l1`: session made in this process, internal cache as L1 (target >= 0.98). "
        "`sesscache-store`: session made by another context sharing the MemoryStore, "
        "`internal_cache=False` (target >= 0.97, issue 22). `sesscache-other`: the same with the "
        "default attach (internal cache on; target >= 0.97). `dict-*`: a Python dict of DER over "
        "the raw callbacks, the baseline to beat.")
    add("")
    add("| stack | TLS | key | transport | internal hs/s (pair) | sesscache-l1 pair | sesscache-l1 server "
        "| sesscache-store pair | sesscache-store server | sesscache-other pair | sesscache-other server "
        "| dict-l1 server | dict-store server | sesscache-store / dict-store (server) |")
    add("| --- | --- | --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in res["configs"]:
        r = c["ratios"]
        get = lambda label, which: r.get(label, {}).get(which)  # noqa: E731
        add(f"| {c['stack']} | {c['version'][3:]} | {c['key']} | {c['transport']} "
            f"| {_m(c['arms']['internal']['pair_rate'])} "
            f"| {_r(get('sesscache-l1 / internal', 'pair'))}{_verdict(get('sesscache-l1 / internal', 'pair'), 0.98)} "
            f"| {_r(get('sesscache-l1 / internal', 'server'))}{_verdict(get('sesscache-l1 / internal', 'server'), 0.98)} "
            f"| {_r(get('sesscache-store / internal', 'pair'))}{_verdict(get('sesscache-store / internal', 'pair'), 0.97)} "
            f"| {_r(get('sesscache-store / internal', 'server'))}{_verdict(get('sesscache-store / internal', 'server'), 0.97)} "
            f"| {_r(get('sesscache-other / internal', 'pair'))}{_verdict(get('sesscache-other / internal', 'pair'), 0.97)} "
            f"| {_r(get('sesscache-other / internal', 'server'))}{_verdict(get('sesscache-other / internal', 'server'), 0.97)} "
            f"| {_r(get('dict-l1 / internal', 'server'))} "
            f"| {_r(get('dict-store / internal', 'server'))} "
            f"| {_r(get('sesscache-store / dict-store', 'server'))} |")
    add("")
    resumed = [a["resumed_fraction"] for c in res["configs"] for a in c["arms"].values()]
    if resumed:
        add(f"Every measured handshake resumed: {min(resumed) == 1.0} (lowest resumed fraction "
            f"over all arms {min(resumed):.4f}).")
        add("")


def _events(res: Dict[str, Any], add) -> None:
    add("### 2. Cost of one session event (microseconds; target 3 or less)")
    add("")
    if _error(res, add):
        return
    add("*By difference*: server-side time per resumed handshake minus the same without hooks, "
        "median [IQR] over interleaved rounds (one event per handshake, checked with the cache's "
        "counters). *In situ*: the handler alone, timed inside real handshakes (p50 / p90): "
        "sesscache's C fast path timed in C (it never enters Python; *handed over* counts the "
        "events it left to the Python handlers), the dict baseline's Python handler with "
        "perf_counter_ns. *Hook floor*: a do-nothing Python handler, the cost of entering "
        "Python from a handshake at all. Verdicts for each measure against 3 us.")
    add("")
    add("| stack | event | hook floor (Python entry) | raw no-op callback | dict over raw callbacks | "
        "**sesscache** by difference | **sesscache in situ** p50 / p90 | handed over | dict in situ p50 "
        "| events/handshake |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for stack, d in res.items():
        for event in ("new", "get"):
            arms = d[event]["arms"]
            sc = "sesscache-l1" if event == "new" else "sesscache-store"
            dc = "dict-l1" if event == "new" else "dict-store"
            floor = arms.get("hook-floor", {}).get("event_us")
            raw = arms.get("raw-noop" if event == "new" else "raw-session", {}).get("event_us")
            sit = d["in_situ"].get(f"sesscache {event} (TLS 1.3, L1)" if event == "new" else "sesscache get (TLS 1.2, store)", {})
            dit = d["in_situ"].get(f"dict {event} (TLS 1.3, L1)" if event == "new" else "dict get (TLS 1.2, store)", {})
            scs = arms[sc]["event_us"]
            verdict = " ok" if scs["median"] <= 3.0 else (" ~" if scs["p25"] <= 3.0 else " **miss**")
            situ = sit.get("p50", float("nan"))
            situ_verdict = " ok" if situ <= 3.0 else " **miss**"
            add(f"| {stack} | {event} ({d[event]['version']}) | {_r(floor, 1) if floor else '-'} "
                f"| {_r(raw, 1) if raw else '-'}{' (Session objects, no DER)' if event == 'get' and raw else ''} "
                f"| {_r(arms[dc]['event_us'], 1)} | **{_r(scs, 1)}**{verdict} "
                f"| **{situ:.1f}** / {sit.get('p90', float('nan')):.1f}{situ_verdict} "
                f"| {sit.get('handed_over', '-')} "
                f"| {dit.get('p50', float('nan')):.1f} | {arms[sc].get('events_per_handshake', float('nan')):.2f} |")
    add("")
    first = next(iter(res.values()))
    stacks = list(res)
    add("Pieces, warm (timeit outside handshakes), microseconds:")
    add("")
    add("| piece | " + " | ".join(stacks) + " |")
    add("| --- |" + " ---: |" * len(stacks))
    for piece in first["components_warm_us"]:
        add(f"| {piece} | " + " | ".join(f"{res[s]['components_warm_us'][piece]:.2f}" for s in stacks) + " |")
    add("")


def _prefork(res: Dict[str, Any], add) -> None:
    add(f"### 3. Pre-fork server: {res.get('workers', 4)} workers on one listening socket (targets: "
        "SQLite > 99 % resumed, internal ~25 %)")
    add("")
    if _error(res, add):
        return
    add(f"{res['clients']} pyOpenSSL clients reconnect {res['reconnects']} times per run in random order "
        "(one connection at a time), offering their newest session. Medians over interleaved runs; "
        "handshakes/s are what the clients see. `sqlite` keeps the internal cache as L1 with the file "
        f"on tmpfs ({res.get('tmpfs')}); `sqlite-disk` the same on disk ({res.get('disk')}); "
        "`sqlite-only` has `internal_cache=False`.")
    add("")
    add("| server stack | TLS | arm | resumed | handshakes/s | vs internal | connections per worker | errors (conn / store) |")
    add("| --- | --- | --- | ---: | ---: | --- | --- | --- |")
    for c in res["configs"]:
        for arm, a in c["arms"].items():
            target = 0.99 if arm.startswith("sqlite") else None
            verdict = "" if target is None else (" ok" if a["resumed"]["median"] > target else " **miss**")
            speed = _r(c["speedup"][arm], 2) if arm in c["speedup"] else "1"
            add(f"| {c['stack']} | {c['version'][3:]} | {arm} | {a['resumed']['median'] * 100:.1f} %{verdict} "
                f"| {_m(a['handshakes_per_s'])} | {speed} | {'/'.join(map(str, a['workers']))} "
                f"| {a['errors']} / {a['store_errors']} |")
    add("")


def _redis(res: Dict[str, Any], add) -> None:
    add("### 4. RedisStore on loopback")
    add("")
    if _error(res, add):
        return
    add(f"Server: {res['server']}. Resumed handshakes with every lookup in the store "
        "(`internal_cache=False`), relative to MemoryStore in the same position:")
    add("")
    kinds = [k for k in res["configs"][0]["ratios"]] if res["configs"] else []
    add("| stack | TLS | MemoryStore hs/s (pair) | " + " | ".join(f"{k} pair | {k} server" for k in kinds)
        + " | store errors |")
    add("| --- | --- | ---: |" + " --- | --- |" * len(kinds) + " --- |")
    for c in res["configs"]:
        errors = sum(a["stats"]["errors"] for a in c["arms"].values())
        add(f"| {c['stack']} | {c['version'][3:]} | {_m(c['arms']['memory']['pair_rate'])} | "
            + " | ".join(f"{_r(c['ratios'][k]['pair'])} | {_r(c['ratios'][k]['server'])}" for k in kinds)
            + f" | {errors} |")
    add("")
    if "latency" in res:
        add(f"Store latency, one call at a time on a {res.get('latency_blob_bytes')}-byte blob (microseconds):")
        add("")
        add("| store | get p50 | get p99 | set p50 | set p99 | calls |")
        add("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, l in res["latency"].items():
            add(f"| {name} | {l['get_p50_us']:.1f} | {l['get_p99_us']:.1f} | {l['set_p50_us']:.1f} "
                f"| {l['set_p99_us']:.1f} | {l['calls']} |")
        add("")
    _redis_sick(res, add)


def _redis_sick(res: Dict[str, Any], add) -> None:
    """The paused-Redis and cross-server tables (issue 14)."""
    if res.get("paused"):
        add("A paused Redis (SIGSTOP, breaker tripped), `SessionCache(RedisStore(url))` with default "
            "arguments: seconds per handshake relative to full handshakes with no store, interleaved "
            "(goal: at most 1.5x):")
        add("")
        add("| stack | TLS | no store: full (us, pair) | paused: full, pair | paused: full, server "
            "| paused: unknown session, pair | paused: unknown session, server | lookups shed |")
        add("| --- | --- | ---: | --- | --- | --- | --- | ---: |")
        for c in res["paused"]:
            full, foreign = c["cost"]["paused redis: full"], c["cost"]["paused redis: unknown session"]
            base = c["arms"]["no store: full"]["pair"]["median"] * 1e6
            add(f"| {c['stack']} | {c['version'][3:]} | {base:.0f} | {_r(full['pair'])} | {_r(full['server'])} "
                f"| {_r(foreign['pair'])} | {_r(foreign['server'])} | {c['store']['lookups_shed']} |")
        add("")
    if res.get("cross_server"):
        add("Cross-server resumption with writes behind the handshake: full handshake on A, the "
            "session offered at once to B (another cache sharing the store); B waits up to "
            "`new_session_wait` for a session issued moments ago (goal with a 20 ms store: >= 99.5 %):")
        add("")
        add("| stack | TLS | store write delay | B's new_session_wait | reconnections | resumed on B "
            "| B waited | reconnect p50 / p99 (ms) |")
        add("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in res["cross_server"]:
            waited = c.get("b_store", {}).get("new_session_waits", 0)
            add(f"| {c['stack']} | {c.get('version', 'TLSv1.3')[3:]} | {c['store_write_delay_ms']:.0f} ms "
                f"| {c.get('new_session_wait_ms', 0):.0f} ms | {c['reconnections']} "
                f"| {c['resumed_on_b']} ({c['resumed_fraction']:.1%}) | {waited} "
                f"| {c['reconnect_ms_p50']:.2f} / {c.get('reconnect_ms_p99', 0):.2f} |")
        add("")


def _memory(res: Dict[str, Any], add) -> None:
    add("### 5. Memory")
    add("")
    if _error(res, add):
        return
    sizes = res["blob_sizes"]
    add("Stored sizes of real server-side sessions (bytes): " + "; ".join(
        f"{k}: DER {v['der']}, blob {v['blob']}, key {v['key']}" for k, v in sizes.items()) + ".")
    add("")
    add("| MemoryStore, malloc in use (mallinfo2) | entries | key + value bytes | held per entry | store overhead per entry | sessions per MiB |")
    add("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, s in res["per_session"].items():
        add(f"| {label} blob | {s['entries']} | {s['key_bytes'] + s['value_bytes']} | {s['held_per_entry']:.0f} "
            f"| {s['overhead_per_entry']:.0f} | {s['sessions_per_mib']:.0f} |")
    add("")
    r = res["rss"]
    samples = r["samples"]
    live_end = samples[-1]["live_sessions"]
    half = fit_slope(samples, 0.5)
    plateau = samples[-1]["rss"] - (1 << 20)  # within 1 MiB of the end
    peak_at = next((s["handshakes"] for s in samples if s["rss"] >= plateau), None)
    live = {name: [s["live_sessions"][name] for s in samples[len(samples) // 2:]] for name in live_end}
    add(f"RSS over {r['handshakes']:,} handshakes ({r['seconds']:.0f} s; resumed {r['resumed_fraction'] * 100:.1f} %, "
        f"{r['renewed_sessions']} sessions renewed after expiry with lifetime={r['lifetime']:.0f} s): "
        f"start {r['rss_start'] / 2**20:.1f} MiB, end {r['rss_end'] / 2**20:.1f} MiB, within 1 MiB of "
        f"the end from handshake {peak_at:,} on. **Slope over the second half: "
        f"{(half or 0) * 1000:.1f} bytes per 1000 handshakes**; over the last three quarters "
        f"{r['slope_bytes_per_1k_handshakes']:.1f} ({r['growth_over_fit_window'] / 2**10:+.0f} KiB over "
        f"{r['fit_window_handshakes']:,} handshakes). Live SSL_SESSION objects over the second half (min-max): "
        + ", ".join(f"{min(v)}-{max(v)} ({k.split(' (')[0]})" for k, v in live.items())
        + "; they rise and fall with the internal caches (sessions expire after `lifetime`), with no trend.")
    add("")


# --- the chart -------------------------------------------------------------------------------

def chart(results: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [n for n in ("resume", "events", "prefork", "redis", "memory") if n in results
              and "error" not in results[n]]
    count = len(panels) + (1 if "memory" in panels else 0)
    if not count:
        return
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.6 * rows), squeeze=False)
    flat = list(axes.flat)
    meta = results["meta"]
    fig.suptitle(f"sesscache benchmarks ({meta['mode']}, {meta['date']}, {meta['nproc']} cores {meta['cpu']}; "
                 f"pyOpenSSL: {meta.get('openssl_pyopenssl', '?').split(' ')[1] if meta.get('openssl_pyopenssl') else '?'}, "
                 f"stdlib: {meta['openssl_stdlib'].split(' ')[1]})", fontsize=11)
    i = 0
    for name in panels:
        if name == "resume":
            _chart_resume(flat[i], results["resume"])
        elif name == "events":
            _chart_events(flat[i], results["events"])
        elif name == "prefork":
            _chart_prefork(flat[i], results["prefork"])
        elif name == "redis":
            _chart_redis(flat[i], results["redis"])
        elif name == "memory":
            _chart_rss(flat[i], results["memory"])
            i += 1
            _chart_live(flat[i], results["memory"])
        i += 1
    for ax in flat[i:]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _err(s):
    return [[s["median"] - s["p25"]], [s["p75"] - s["median"]]]


def _chart_resume(ax, res) -> None:
    series = [("sesscache-l1 / internal", "sesscache L1"), ("sesscache-store / internal", "sesscache store"),
              ("dict-l1 / internal", "dict L1"), ("dict-store / internal", "dict store")]
    configs = res["configs"]
    width = 0.8 / len(series)
    for k, (label, short) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for j, c in enumerate(configs):
            s = c["ratios"].get(label, {}).get("server")
            if not s:
                continue
            xs.append(j + (k - (len(series) - 1) / 2) * width)
            ys.append(s["median"])
            lo.append(s["median"] - s["p25"])
            hi.append(s["p75"] - s["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], label=short, capsize=1.5)
    ax.axhline(0.98, color="green", lw=0.8, ls="--", label="targets 0.98 / 0.95")
    ax.axhline(0.95, color="green", lw=0.8, ls=":")
    ax.axhline(1.0, color="black", lw=0.5)
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([f"{c['stack'][:4]} {c['version'][-3:]}\n{c['key']} {c['transport'][:3]}" for c in configs],
                       fontsize=6)
    ax.set_ylim(0.4, 1.15)
    ax.set_ylabel("resumed handshakes/s vs internal cache (server side)")
    ax.set_title("1. resumption rate ratio (median, IQR)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")


def _chart_events(ax, res) -> None:
    labels, values, errs = [], [], [[], []]
    for stack, d in res.items():
        for event, arms in (("new", ("hook-floor", "raw-noop", "dict-l1", "sesscache-l1")),
                            ("get", ("raw-session", "dict-store", "sesscache-store"))):
            for arm in arms:
                s = d[event]["arms"].get(arm, {}).get("event_us")
                if not s:
                    continue
                labels.append(f"{stack[:4]} {event}\n{arm}")
                values.append(s["median"])
                errs[0].append(s["median"] - s["p25"])
                errs[1].append(s["p75"] - s["median"])
    colors = ["tab:red" if "sesscache" in l else "tab:gray" for l in labels]
    ax.bar(range(len(values)), values, yerr=errs, color=colors, capsize=1.5)
    ax.axhline(3.0, color="green", ls="--", lw=0.8, label="target 3 us")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, fontsize=5.5, rotation=90)
    ax.set_ylabel("microseconds per event (by difference)")
    ax.set_title("2. cost of one session event", fontsize=10)
    ax.legend(fontsize=7)


def _chart_prefork(ax, res) -> None:
    labels, resumed, rate = [], [], []
    for c in res["configs"]:
        for arm, a in c["arms"].items():
            labels.append(f"{c['stack'][:4]} {c['version'][-3:]}\n{arm}")
            resumed.append(a["resumed"]["median"] * 100)
            rate.append(a["handshakes_per_s"]["median"])
    xs = range(len(labels))
    ax.bar(xs, resumed, color=["tab:gray" if "internal" in l else "tab:blue" for l in labels])
    ax.set_ylabel("% resumed")
    ax.set_ylim(0, 105)
    ax.axhline(99, color="green", ls="--", lw=0.8)
    ax.axhline(25, color="gray", ls=":", lw=0.8)
    ax2 = ax.twinx()
    ax2.plot(list(xs), rate, "o", color="tab:orange", label="handshakes/s")
    ax2.set_ylabel("handshakes/s (clients' view)")
    ax2.legend(fontsize=7, loc="lower right")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=5.5, rotation=90)
    ax.set_title(f"3. pre-fork, {res.get('workers', 4)} workers", fontsize=10)


def _chart_redis(ax, res) -> None:
    lat = res.get("latency", {})
    names = list(lat)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [lat[n]["get_p50_us"] for n in names], 0.4, label="get p50")
    ax.bar([x + 0.2 for x in xs], [lat[n]["get_p99_us"] for n in names], 0.4, label="get p99")
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_ylabel("microseconds (log)")
    ratios = []
    for c in res["configs"]:
        for k, r in c["ratios"].items():
            ratios.append(f"{c['stack'][:4]} {c['version'][-3:]} {k}: {r['server']['median']:.2f}")
    ax.set_title("4. store get latency; hs/s vs MemoryStore (server):", fontsize=9)
    ax.text(0.02, 0.98, "\n".join(ratios), transform=ax.transAxes, fontsize=6, va="top")
    ax.legend(fontsize=7, loc="lower right")


def _chart_rss(ax, res) -> None:
    r = res["rss"]
    xs = [s["handshakes"] for s in r["samples"]]
    ys = [s["rss"] / 2**20 for s in r["samples"]]
    ax.plot(xs, ys, ".-", ms=3)
    ax.ticklabel_format(useOffset=False)
    ax.set_ylim(0, max(ys) * 1.15)  # from zero: flat is flat, not magnified noise
    ax.set_xlabel("handshakes")
    ax.set_ylabel("RSS (MiB)")
    half = fit_slope(r["samples"], 0.5)
    ax.set_title(f"5. RSS; slope over the 2nd half: {(half or 0) * 1000:.0f} B / 1000 handshakes", fontsize=10)
    per = res["per_session"]["typical"]
    ax.text(0.02, 0.02, f"MemoryStore: {per['held_per_entry']:.0f} B per session "
            f"({per['key_bytes'] + per['value_bytes']} B payload)", transform=ax.transAxes, fontsize=7)


def _chart_live(ax, res) -> None:
    r = res["rss"]
    xs = [s["handshakes"] for s in r["samples"]]
    for name in r["samples"][0]["live_sessions"]:
        ax.plot(xs, [s["live_sessions"][name] for s in r["samples"]], ".-", ms=3, label=name.split(" (")[0][:40])
    ax.set_xlabel("handshakes")
    ax.set_ylabel("live SSL_SESSION objects")
    ax.set_title("5. live sessions per libssl copy", fontsize=10)
    ax.legend(fontsize=6)


# --- README --------------------------------------------------------------------------------------

def update_readme(readme: Path, table: str, chart: Optional[str], json_name: str) -> None:
    block = [BEGIN, ""]
    if chart:
        block.append(f"![benchmark chart]({chart})")
        block.append("")
    block.append(f"Raw numbers: [`{json_name}`]({json_name}).")
    block.append("")
    block.append(table.rstrip())
    block.append("")
    block.append(END)
    text = readme.read_text() if readme.exists() else "# sesscache benchmarks\n\n## Results\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: "\n".join(block), text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + "\n".join(block) + "\n"
    readme.write_text(text)
