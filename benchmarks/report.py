"""Turn the benchmark's rows into ``results.md`` (the table docs/performance.md shows) and ``results.png``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ALGORITHMS = ["kmeans", "bisecting_kmeans", "gaussian_mixture"]


def _count(value) -> str:
    return "–" if value is None else f"{value:,}"


def _get(rows, size, stage, key="seconds"):
    return next((r.get(key) for r in rows if r["size"] == size and r["stage"] == stage), None)


def _s(value) -> str:
    return "–" if value is None else f"{value:,.1f}"


def _x(num, den) -> str:
    return "–" if num is None or den in (None, 0) else f"{num / den:.2f}x"


def _n(size: int) -> str:
    return f"{size / 1e6:g}M"


def write_report(out: Path, meta: dict, rows: list[dict]) -> str:
    sizes = sorted({r["size"] for r in rows if r["size"] is not None})
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; Spark {meta.get('spark')} local[*], "
        f"{meta.get('shuffle_partitions')} shuffle partitions, BLAS `{meta.get('blas')}`. "
        f"Spark start (JVM + Delta jars from the Ivy cache): {_s(_get(rows, None, 'spark_start'))} s, "
        "not included below. "
        f"Peak memory is the machine's memory in use (idle: {meta.get('baseline_used_gb', '?')} GB). "
        "Seconds are wall clock; ratios are ours ÷ peer (below 1 = we are faster).",
        "",
        "| transactions | customers | features | DuckDB | features ÷ DuckDB | naive PySpark | naive ÷ ours "
        "| training (sweep) | naive sweep | naive ÷ our sweep | log model | end to end | peak memory GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        feat, duck, naive = (_get(rows, n, s) for s in ("features", "features_duckdb", "features_naive"))
        sweep, naive_sweep = _get(rows, n, "training.sweep"), _get(rows, n, "sweep_naive")
        peak = max((r.get("peak_gb") or 0) for r in rows if r["size"] == n)
        customers = _count(_get(rows, n, "features", "customers"))
        lines.append(
            f"| {_n(n)} | {customers} | {_s(feat)} | {_s(duck)} | {_x(feat, duck)} "
            f"| {_s(naive)} | {_x(naive, feat)} | {_s(_get(rows, n, 'training'))} ({_s(sweep)}) | {_s(naive_sweep)} "
            f"| {_x(naive_sweep, sweep)} | {_s(_get(rows, n, 'training.log_model'))} | {_s(_get(rows, n, 'pipeline'))} "
            f"| {peak:.1f} |"
        )
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        pa, pb = _get(rows, a, "pipeline"), _get(rows, b, "pipeline")
        fa, fb = _get(rows, a, "features"), _get(rows, b, "features")
        lines += [
            "",
            f"Growth {_n(a)} → {_n(b)} ({b / a:g}x the rows): features {_x(fb, fa)}, end to end {_x(pb, pa)}.",
        ]
    fit = [r for r in rows if r["stage"].startswith("fit.")]
    if fit:
        shape = fit[0]
        lines += [
            "",
            f"MLlib against scikit-learn on the same prepared matrix ({shape['rows']:,} customers × "
            f"{shape['features']} features, k={shape['k']}, {shape['max_iter']} iterations, seconds):",
            "",
            "| algorithm | MLlib, input cached | MLlib, input not cached | scikit-learn "
            "| MLlib (cached) ÷ scikit-learn |",
            "|---|---|---|---|---|",
        ]
        for algorithm in ALGORITHMS:
            c, u, s = (_get(rows, None, f"fit.{algorithm}.{v}") for v in ("spark_cached", "spark_uncached", "sklearn"))
            lines.append(f"| {algorithm} | {_s(c)} | {_s(u)} | {_s(s)} | {_x(c, s)} |")
    t1, t2 = _get(rows, None, "sweep_threads.1"), _get(rows, None, "sweep_threads.2")
    if t1 is not None:
        lines += [
            "",
            f"KMeans sweep (the training's k range) on the sample: one driver thread {_s(t1)} s, "
            f"two threads {_s(t2)} s ({_x(t2, t1)}).",
        ]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    _chart(out / "results.png", rows, sizes)
    return text


def _chart(path: Path, rows: list[dict], sizes: list[int]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = {"features": "features (ours)", "features_duckdb": "features (DuckDB)",
              "features_naive": "features (naive PySpark)", "pipeline": "end to end (ours)"}  # fmt: skip
    for stage, label in series.items():
        points = [(n, _get(rows, n, stage)) for n in sizes if _get(rows, n, stage) is not None]
        if points:
            left.plot(*zip(*points, strict=True), marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="transactions", ylabel="seconds", title="Time by input size")
    left.legend()
    names, ratios = [], []
    for algorithm in ALGORITHMS:
        c, s = _get(rows, None, f"fit.{algorithm}.spark_cached"), _get(rows, None, f"fit.{algorithm}.sklearn")
        if c and s:
            names.append(algorithm)
            ratios.append(c / s)
    for n in sizes:
        f, d = _get(rows, n, "features"), _get(rows, n, "features_duckdb")
        if f and d:
            names.append(f"features {_n(n)}")
            ratios.append(f / d)
    right.barh(names, ratios)
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set_xscale("log")
    right.set(xlabel="ours ÷ single-machine peer (seconds)", title="MLlib vs scikit-learn, features vs DuckDB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
