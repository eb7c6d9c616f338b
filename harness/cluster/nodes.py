"""Judging hosts from their figures, without measuring anything (harness.cluster.health measures): the
preflight's verdicts and table, and the straggler watch. No torch: harness.submit --preflight prints the
table on a login node."""

import statistics

from harness.spec import ClusterConfig

FIGURES = {  # figure -> (ClusterConfig floor field, what it is, judged against the other hosts too)
    "matmul_tflops": ("preflight_min_tflops", "matmul TFLOP/s", True),
    "memory_gbps": ("preflight_min_memory_gbps", "memory GB/s", True),
    "read_mbps": ("preflight_min_read_mbps", "shard read MB/s", False),
}


def figure(value: float) -> float:
    """Four significant figures: a CPU's TFLOP/s or a slow link's GB/s is well under 0.001."""
    return float(f"{value:.4g}")


def verdicts(records: list[dict], cfg: ClusterConfig) -> list[dict]:
    """One row per host: its worst rank's figures, and whether the host is bad and why. The all-reduce
    figure belongs to the whole allocation: below its floor it is reported on every host, but
    excludes none (no single host can be blamed for it)."""
    hosts: dict[str, list[dict]] = {}
    for r in records:
        hosts.setdefault(r["host"], []).append(r)
    rows = []
    for host, rs in hosts.items():
        row = {"host": host, "ranks": [r["rank"] for r in rs]}
        for key in FIGURES:
            values = [r[key] for r in rs if r[key] is not None]
            row[key] = figure(min(values)) if values else None
        row["busbw_gbps"] = {k: figure(v) for k, v in rs[0]["busbw_gbps"].items()}
        rows.append(row)
    for row in rows:
        reasons = []
        for key, (floor_field, what, relative) in FIGURES.items():
            value, floor = row[key], getattr(cfg, floor_field)
            if value is None:
                continue
            if floor and value < floor:
                reasons.append(f"{what} {value:.3g} < floor {floor:g}")
            others = [r[key] for r in rows if r is not row and r[key] is not None]
            if relative and others and value < cfg.preflight_fraction * statistics.median(others):
                reasons.append(f"{what} {value:.3g} < {cfg.preflight_fraction:g} x the other hosts' median "
                               f"{statistics.median(others):.3g}")
        low = [f"{int(size) / 2**20:g} MiB {bw:.3g} GB/s" for size, bw in row["busbw_gbps"].items()
               if cfg.preflight_min_busbw_gbps and bw < cfg.preflight_min_busbw_gbps]
        row["warnings"] = [f"all-reduce busbw below {cfg.preflight_min_busbw_gbps:g} GB/s: {', '.join(low)}"] \
            if low else []
        row["verdict"] = "bad" if reasons else "ok"
        row["reasons"] = reasons
    return rows


def table(rows: list[dict]) -> str:
    """The preflight as the job log shows it: one line per host."""
    sizes = list(rows[0]["busbw_gbps"]) if rows else []
    head = ["host", "ranks", "matmul TFLOP/s", "memory GB/s", "read MB/s",
            *[f"busbw {int(s) / 2**20:g}MiB" for s in sizes], "verdict"]

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:,.3g}" if v < 100 else f"{v:,.0f}"

    cells = [head] + [[r["host"], ",".join(map(str, r["ranks"])), num(r["matmul_tflops"]), num(r["memory_gbps"]),
                       num(r["read_mbps"]), *[num(r["busbw_gbps"][s]) for s in sizes],
                       r["verdict"] + ("" if not r["reasons"] else ": " + "; ".join(r["reasons"]))] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines += [f"warning: {r['host']}: {w}" for r in rows for w in r["warnings"]]
    return "\n".join(lines)


def straggler(times: list[float], hosts: list[str]) -> tuple[str, float] | None:
    """The slowest host (by its slowest rank's compute time) and its ratio to the median of the
    other hosts'; None with a single host."""
    per_host: dict[str, float] = {}
    for t, host in zip(times, hosts, strict=True):
        per_host[host] = max(per_host.get(host, 0.0), t)
    if len(per_host) < 2:
        return None
    slowest = max(per_host, key=per_host.get)
    others = statistics.median(v for h, v in per_host.items() if h != slowest)
    return slowest, per_host[slowest] / others if others > 0 else float("inf")


class StragglerWatch:
    """Counts consecutive log steps on which the same host stays slower than `ratio` x the others."""

    def __init__(self, ratio: float, steps: int):
        self.ratio, self.steps = ratio, steps
        self.host: str | None = None
        self.ratios: list[float] = []  # the host's ratios on those log steps

    def update(self, slowest: tuple[str, float] | None) -> str | None:
        """The host to move off, once it has been too slow for `steps` log steps in a row."""
        if not self.ratio or slowest is None or slowest[1] <= self.ratio:
            self.host, self.ratios = None, []
            return None
        host, ratio = slowest
        self.ratios = [*self.ratios, ratio] if host == self.host else [ratio]
        self.host = host
        return host if len(self.ratios) >= self.steps else None

    @property
    def evidence(self) -> dict:
        return {"host": self.host, "ratios": [round(r, 3) for r in self.ratios], "threshold": self.ratio}
