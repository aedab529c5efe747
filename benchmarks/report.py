"""Results as JSON, a Markdown table with ratios and targets, and a PNG chart."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import msgspec

from benchmarks.harness import Measured, Stats

OURS = "angzarr_es"
FLOOR = "raw nats-py (floor)"
OURS_ONE = "angzarr_es, 1 event per call"
FLOOR_DECODED = "raw nats-py (floor + event decode)"
NAIVE = "naive nats-py"
WIRE = "socket only (no client)"
PEERS = ("eventsourcing-sqlite", "eventsourcing-postgres")


class Target(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    measured: float
    limit: float
    unit: str
    met: bool
    detail: str = ""


class Results(msgspec.Struct, frozen=True, kw_only=True):
    machine: dict[str, str]
    notes: list[str]
    results: list[Stats]
    memory: dict[str, dict[str, float]]
    targets: list[Target]


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


def targets(results: Sequence[Stats], memory: dict[str, dict[str, float]]) -> list[Target]:
    """Each of the issue's targets with its measured ratio."""
    by = {(s.op, s.contender): s for s in results}
    out: list[Target] = []

    def ratio(
        name: str,
        num: Stats | None,
        den: Stats | None,
        field: str,
        limit: float,
        at_least: bool = False,
    ) -> None:
        if num is None or den is None:
            return
        a, b = getattr(num, field), getattr(den, field)
        value = a / b if b else float("inf")
        met = value >= limit if at_least else value <= limit
        out.append(
            Target(
                name=name,
                measured=round(value, 3),
                limit=limit,
                unit="x",
                met=met,
                detail=f"{num.contender} {field} {a:.1f} / {den.contender} {b:.1f}",
            )
        )

    cached = "append 1 event (cached)"
    ours1, floor1 = by.get((cached, OURS)), by.get((cached, FLOOR))
    ratio("append (cached) p50 <= 1.10x floor p50", ours1, floor1, "p50", 1.10)
    ratio("append (cached) p99 <= 1.5x floor p99", ours1, floor1, "p99", 1.5)
    if ours1 is not None:
        out.append(
            Target(
                name="append (cached) p99 < 1 ms",
                measured=round(ours1.p99, 1),
                limit=1000.0,
                unit="µs",
                met=ours1.p99 < 1000.0,
            )
        )
    ten = "append 10 events (cached)"
    ratio(
        "append 10 events p50 <= 1.3x append 1 p50 (interleaved)",
        by.get((ten, OURS)),
        by.get((ten, OURS_ONE)),
        "p50",
        1.3,
    )
    for size in (100, 1000):
        for per_commit in (1, 10):
            op = f"load {size} events ({per_commit}/commit)"
            ours, floor, naive = by.get((op, OURS)), by.get((op, FLOOR)), by.get((op, NAIVE))
            ratio(f"{op}: p50 <= 1.3x Direct Get floor", ours, floor, "p50", 1.3)
            ratio(
                f"{op}: p50 <= 1.3x Direct Get floor that also decodes each event",
                ours,
                by.get((op, FLOOR_DECODED)),
                "p50",
                1.3,
            )
            ratio(
                f"{op}: naive ordered consumer >= 3x slower (p50)",
                naive,
                ours,
                "p50",
                3.0,
                at_least=True,
            )
    writers = [s for s in results if s.op.endswith("concurrent writers")]
    w = {s.contender: s for s in writers}
    if writers:
        ratio(
            f"{writers[0].op}: >= 0.8x raw pipelined throughput",
            w.get(OURS),
            w.get(FLOOR),
            "ops_per_s",
            0.8,
            at_least=True,
        )
    for peer in PEERS:
        ratio(
            f"append p50 faster than {peer} (ratio < 1)", ours1, by.get((cached, peer)), "p50", 1.0
        )
        # The peers store one row per event whatever the commit size, so
        # their load of 100 events is measured once (in the 1/commit rounds).
        theirs = by.get(("load 100 events (1/commit)", peer))
        for per_commit in (1, 10):
            ratio(
                f"load 100 ({per_commit}/commit) p50 faster than {peer} (ratio < 1)",
                by.get((f"load 100 events ({per_commit}/commit)", OURS)),
                theirs,
                "p50",
                1.0,
            )
    for key, got in memory.items():
        if key.startswith("iter"):
            growth = got["peak_growth_mb"]
            out.append(
                Target(
                    name=f"{key}: peak RSS growth < 50 MB",
                    measured=round(growth, 1),
                    limit=50.0,
                    unit="MB",
                    met=growth < 50.0,
                )
            )
    return out


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
        f"started by the run's operator, PostgreSQL data). Run took {m.get('seconds', '?')} s.",
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
        lines.append(
            f"| {t.name} | {t.measured:g} {t.unit} | {t.limit:g} {t.unit} | "
            f"{'yes' if t.met else '**no**'} |"
        )
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
    return "\n".join(lines)


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
    chart_png: bool = True,
) -> list[Path]:
    """Write results-<suffix>.json/.md and latency-<suffix>.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    stats = [m.stats for m in measured]
    data = Results(
        machine=meta, notes=notes, results=stats, memory=memory, targets=targets(stats, memory)
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
    FLOOR,
    FLOOR_DECODED,
    WIRE,
    NAIVE,
    "eventsourcing-sqlite",
    "eventsourcing-postgres",
)
MODES = (("default", "default file store"), ("sync-always", "`sync_interval: always`"))


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
            cells.append("" if t is None else f"{t.measured:g} {t.unit} {'✓' if t.met else '✗'}")
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
