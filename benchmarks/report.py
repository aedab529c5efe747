"""Results as JSON, a Markdown table with ratios and targets, a PNG chart, and
the summary block of docs/benchmarks/README.md."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import msgspec

from benchmarks.contenders import (
    CACHED_PEERS,
    FLOOR,
    FLOOR_DECODED,
    NAIVE,
    OURS,
    OURS_HOT,
    OURS_PER_DOMAIN,
    PEERS,
    WIRE,
)
from benchmarks.context import LeaderSpread
from benchmarks.harness import Measured, Stats
from benchmarks.targets import Target, targets


class Results(msgspec.Struct, frozen=True, kw_only=True):
    machine: dict[str, str]
    notes: list[str]
    results: list[Stats]
    memory: dict[str, dict[str, float]]
    targets: list[Target]
    cache_memory: dict[str, dict[str, float]] = {}
    leaders: LeaderSpread | None = None
    """On a cluster: where the leaders of new per-domain streams went."""


def verdict(t: Target, yes: str = "yes", no: str = "**no**") -> str:
    """How a target reads in a table: met or not, or a context row."""
    if t.context:
        return "context"
    return yes if t.met else no


def limit_of(t: Target) -> str:
    return "" if t.context and not t.limit else f"{t.limit:g} {t.unit}"


def fmt_us(us: float) -> str:
    if us >= 10_000:
        return f"{us / 1000:.0f} ms"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    if us >= 100:
        return f"{us:.0f} µs"
    return f"{us:.1f} µs"


def fmt_rate(rate: float) -> str:
    if rate >= 10_000:
        return f"{rate / 1000:.0f}k"
    if rate >= 1000:
        return f"{rate / 1000:.1f}k"
    return f"{rate:.0f}"


def markdown(data: Results) -> str:
    m = data.machine
    lines = [
        f"# angzarr_es benchmarks: {m.get('nats_mode', '')} ({m.get('preset', '')} run)",
        "",
        f"Measured {m.get('started', '')} on {m.get('cpu', '?')}, {m.get('cores', '?')} cores "
        f"(load average {m.get('loadavg_start', '?')} at start, {m.get('loadavg_end', '?')} at "
        f"end), {m.get('os', '')}.",
        f"Python {m.get('python', '?')}, nats-server {m.get('nats-server', '?')}, nats-py "
        f"{m.get('nats-py', '?')}, msgspec {m.get('msgspec', '?')}, protobuf "
        f"{m.get('protobuf', '?')}, eventsourcing {m.get('eventsourcing', '?')}, SQLite "
        f"{m.get('sqlite', '?')}. Storage: {m.get('storage', '?')} (NATS, SQLite and, when "
        f"started by the run's operator, PostgreSQL data). Event loop: "
        f"{m.get('loop', 'asyncio')}. Run took {m.get('seconds', '?')} s.",
        "",
    ]
    if m.get("command"):
        lines += [f"Command: `{m['command']}`", ""]
    for note in data.notes:
        lines.append(f"- {note}")
    if data.notes:
        lines.append("")
    lines += ["## Targets", "", "| target | measured | limit | met |", "|---|---:|---:|:---:|"]
    for t in data.targets:
        lines.append(f"| {t.name} | {t.measured:g} {t.unit} | {limit_of(t)} | {verdict(t)} |")
    lines += ["", "## Latency per operation", ""]
    ops: dict[str, list[Stats]] = {}
    for s in data.results:
        ops.setdefault(s.op, []).append(s)
    for op, rows in ops.items():
        floor = next((r for r in rows if r.contender == FLOOR), None)
        ours = next((r for r in rows if r.contender == OURS), None)
        rate_head = "appends/s" if op.endswith("writers") else "ops/s (sequential)"
        lines += [
            f"### {op}",
            "",
            f"| contender | p50 | p90 | p99 | {rate_head} | events/s | p50 / floor | "
            "p50 / angzarr_es | per-round p50 (µs) or rate |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            vs_floor = f"{r.p50 / floor.p50:.2f}" if floor and floor.p50 else ""
            vs_ours = f"{r.p50 / ours.p50:.2f}" if ours and ours.p50 else ""
            rounds = ", ".join(f"{x:g}" for x in r.round_p50s)
            lines.append(
                f"| {r.contender} | {fmt_us(r.p50)} | {fmt_us(r.p90)} | {fmt_us(r.p99)} | "
                f"{fmt_rate(r.ops_per_s)} | {fmt_rate(r.events_per_s)} | {vs_floor} | "
                f"{vs_ours} | {rounds} |"
            )
        lines.append("")
    if data.memory:
        lines += [
            "## Streaming and memory (separate process per row)",
            "",
            "| operation | events/s | peak RSS growth |",
            "|---|---:|---:|",
        ]
        for key, got in data.memory.items():
            lines.append(
                f"| {key} | {fmt_rate(got['events_per_s'])} | {got['peak_growth_mb']:.1f} MB |"
            )
        lines.append("")
    if data.cache_memory:
        lines += [
            "## The hot-aggregate cache's memory (separate process per row)",
            "",
            "| case | aggregates read | cached (events) | bound | the cache's count | "
            "RSS growth | RSS per cached event | estimate per event |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, got in data.cache_memory.items():
            lines.append(
                f"| {key} | {got['aggregates']:.0f} | {got['entries']:.0f} "
                f"({got['events']:.0f}) | {got['max_bytes'] / 2**20:g} MiB | "
                f"{got['cache_bytes'] / 2**20:.1f} MiB | {got['rss_growth_mb']:.1f} MiB | "
                f"{got['rss_per_event']:.0f} B | {got['estimate_per_event']:.0f} B |"
            )
        lines.append("")
    if data.leaders is not None:
        lines += leader_table(data.leaders)
    return "\n".join(lines)


def leader_table(spread: LeaderSpread) -> list[str]:
    """The leader spread as a section of the Markdown report."""
    lines = [
        f"## Stream leaders: {len(spread.leaders)} new R{spread.replicas} per-domain streams",
        "",
        "angzarr_es asks for no placement: nats-server's meta leader gives each new "
        "stream a preferred leader picked at random among its online peers.",
        "",
        "| server | streams led | which |",
        "|---|---:|---|",
    ]
    for server, count in spread.per_server.items():
        led = [name for name, leader in spread.leaders.items() if leader == server]
        lines.append(f"| {server} | {count} | {', '.join(led)} |")
    lines.append("")
    return lines


def chart(path: Path, title: str, measured: Sequence[Measured]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops: dict[str, list[Measured]] = {}
    for m in measured:
        ops.setdefault(m.stats.op, []).append(m)
    cols = 2
    rows = (len(ops) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 2.4 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (op, group) in zip(flat, ops.items(), strict=False):
        labels = [m.stats.contender for m in group]
        data = [m.samples_us or [0.0] for m in group]
        ax.boxplot(data, vert=False, whis=(1, 99), showfliers=False, widths=0.6)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_title(op, fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", which="both", alpha=0.3)
    for ax in flat[len(ops) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{title}; latency in µs, log scale (box p25-p75, line p50, whiskers p1-p99)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(
    out: Path,
    suffix: str,
    meta: dict[str, str],
    notes: list[str],
    measured: Sequence[Measured],
    memory: dict[str, dict[str, float]],
    *,
    cache_memory: dict[str, dict[str, float]] | None = None,
    leaders: LeaderSpread | None = None,
    sync_always: bool = False,
    chart_png: bool = True,
) -> list[Path]:
    """Write results-<suffix>.json/.md and latency-<suffix>.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    stats = [m.stats for m in measured]
    cache_memory = cache_memory or {}
    judged = targets(stats, memory, cache_memory, sync_always=sync_always)
    data = Results(
        machine=meta,
        notes=notes,
        results=stats,
        memory=memory,
        targets=judged,
        cache_memory=cache_memory,
        leaders=leaders,
    )
    paths = [out / f"results-{suffix}.json", out / f"results-{suffix}.md"]
    paths[0].write_bytes(msgspec.json.format(msgspec.json.encode(data)) + b"\n")
    paths[1].write_text(markdown(data), encoding="utf-8")
    if chart_png and importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no chart (pip install 'angzarr-es[bench]')")
    elif chart_png:
        png = out / f"latency-{suffix}.png"
        chart(png, f"angzarr_es latency, {meta.get('nats_mode', '')}", measured)
        paths.append(png)
    return paths


SUMMARY_START = "<!-- summary:start (written by python -m benchmarks) -->"
SUMMARY_END = "<!-- summary:end -->"
SUMMARY_COLUMNS = (
    OURS,
    OURS_PER_DOMAIN,
    OURS_HOT,
    FLOOR,
    FLOOR_DECODED,
    WIRE,
    NAIVE,
    *PEERS,
    *CACHED_PEERS,
)
MODES = (
    ("default", "default file store"),
    ("sync-always", "`sync_interval: always`"),
    ("cluster", "R3 cluster (3 servers on loopback)"),
)


def summary(out: Path) -> str:
    """Targets and p50s of every full run in `out`, side by side."""
    runs: dict[str, Results] = {}
    for mode, _ in MODES:
        path = out / f"results-{mode}.json"
        if path.exists():
            runs[mode] = msgspec.json.decode(path.read_bytes(), type=Results)
    if not runs:
        return ""
    lines = ["| target | " + " | ".join(label for mode, label in MODES if mode in runs) + " |"]
    lines.append("|---|" + "---:|" * len(runs))
    names: list[str] = []
    for data in runs.values():
        names += [t.name for t in data.targets if t.name not in names]
    for name in names:
        cells = []
        for data in runs.values():
            t = next((t for t in data.targets if t.name == name), None)
            cells.append(
                "" if t is None else f"{t.measured:g} {t.unit} {verdict(t, '✓', '✗')}".rstrip()
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for mode, label in MODES:
        if mode not in runs:
            continue
        data = runs[mode]
        present = [c for c in SUMMARY_COLUMNS if any(s.contender == c for s in data.results)]
        lines += [
            "",
            f"p50 per operation, {label} ({data.machine.get('started', '')}, load average "
            f"{data.machine.get('loadavg_start', '?')}):",
            "",
            "| operation | " + " | ".join(present) + " |",
            "|---|" + "---:|" * len(present),
        ]
        ops: dict[str, dict[str, Stats]] = {}
        for s in data.results:
            ops.setdefault(s.op, {})[s.contender] = s
        for op, row in ops.items():
            if op.startswith("64"):
                cells = [fmt_rate(row[c].ops_per_s) + "/s" if c in row else "" for c in present]
            else:
                cells = [fmt_us(row[c].p50) if c in row else "" for c in present]
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
        for key, got in data.memory.items():
            lines.append(
                f"| {key} | {fmt_rate(got['events_per_s'])} events/s, peak RSS +"
                f"{got['peak_growth_mb']:.1f} MB |" + " |" * (len(present) - 1)
            )
        for key, got in data.cache_memory.items():
            lines.append(
                f"| {key}: {got['aggregates']:.0f} read, {got['entries']:.0f} kept | RSS +"
                f"{got['rss_growth_mb']:.1f} MiB (bound {got['max_bytes'] / 2**20:g} MiB), "
                f"{got['rss_per_event']:.0f} B per cached event |" + " |" * (len(present) - 1)
            )
        if data.leaders is not None:
            counts = ", ".join(f"{k} {n}" for k, n in data.leaders.per_server.items())
            lines += [
                "",
                f"Leaders of {len(data.leaders.leaders)} new R{data.leaders.replicas} "
                f"per-domain streams, per server: {counts}.",
            ]
    return "\n".join(lines)


def update_readme(out: Path) -> Path | None:
    """Replace the summary block of `out`/README.md, if it has one."""
    readme = out / "README.md"
    if not readme.exists():
        return None
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(SUMMARY_START), text.find(SUMMARY_END)
    if start < 0 or end < start:
        return None
    block = summary(out)
    readme.write_text(
        text[: start + len(SUMMARY_START)] + "\n" + block + "\n" + text[end:], encoding="utf-8"
    )
    return readme
