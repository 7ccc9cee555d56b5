"""The segment report: one self-contained HTML page (charts embedded as PNG data URIs).

Sections, in order: a summary (model, snapshot, customers, rule fidelity), segment
sizes and revenue share charts, a profile heatmap (z-scores of the features against
the whole base), and one card per segment with its name, description, KPIs, rules,
separating features and recommended categories, and, when the training run passes
its sweep, how the number of segments was chosen (each algorithm's curves, the
finalists, and the rule's reasons in words). Everything comes from the
:class:`SegmentReport` data; this module only renders.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment, select_autoescape  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from segmentation.selection import describe_choice  # noqa: E402

__all__ = ["ChoicePanel", "SegmentReport", "choice_figure", "render_report", "heatmap_figure", "share_figure"]


@dataclass
class ChoicePanel:
    """How the number of segments was chosen: the sweep's records (algorithm, k, silhouette,
    stability_ari, min_cluster_share) and the rule's rationale (``selection.choose``), which
    ``selection.describe_choice`` puts in words."""

    sweep: pd.DataFrame
    rationale: dict[str, Any]


@dataclass
class SegmentReport:
    title: str
    model: str
    as_of: str
    customers: int
    fidelity: float
    profile: pd.DataFrame  # segment_profile rows (pandas)
    names: dict[int, str]
    descriptions: dict[int, str]
    rules: dict[int, list[dict]]
    separating: dict[int, list[tuple[str, float]]]
    recommendations: dict[int, list[tuple[str, float]]]
    heatmap_features: list[str] = field(default_factory=list)
    choice: ChoicePanel | None = None
    outliers: dict[str, Any] | None = None  # profiles.outlier_profile, when the run flags outliers
    tree: pd.DataFrame | None = None  # hierarchy.describe_tree, with two levels of segments


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def share_figure(labels: list[str], values: list[float], title: str, color: str) -> Figure:
    figure, ax = plt.subplots(figsize=(6, 0.45 * len(labels) + 1.2))
    y = np.arange(len(labels))
    ax.barh(y, [100 * v for v in values], color=color)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("%")
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(100 * v, i, f" {100 * v:.1f}%", va="center", fontsize=8)
    ax.set_xlim(0, max([100 * v for v in values] + [1]) * 1.2)
    return figure


def heatmap_figure(z: pd.DataFrame) -> Figure:
    """Rows: segments (labelled), columns: features; colour: z-score, clipped to +-2."""
    figure, ax = plt.subplots(figsize=(0.45 * z.shape[1] + 3, 0.5 * z.shape[0] + 2))
    image = ax.imshow(z.to_numpy(float), cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(z.shape[1]), z.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(z.shape[0]), z.index, fontsize=9)
    ax.set_title("Profile: segment mean vs all customers (standard deviations)")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def choice_figure(sweep: pd.DataFrame, chosen_k: dict[str, int], stable_ari: float) -> Figure:
    """Silhouette and stability by k, a line per algorithm, each algorithm's pick circled."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # k is a whole number; shared by both panels
    panels = (
        ("silhouette", "silhouette (higher: clearer segments)"),
        ("stability_ari", "stability between seeds (ARI)"),
    )
    colours = dict(zip(sweep["algorithm"].unique(), plt.get_cmap("tab10").colors, strict=False))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for algorithm, rows in sweep.groupby("algorithm", sort=False):
            rows = rows[pd.to_numeric(rows[column], errors="coerce").notna()].sort_values("k")
            if rows.empty:
                continue
            colour = colours[algorithm]
            ax.plot(rows["k"], rows[column].astype(float), marker="o", label=algorithm, color=colour)
            picked = rows[rows["k"] == chosen_k.get(algorithm)]
            ax.scatter(picked["k"], picked[column].astype(float), s=220, facecolors="none", edgecolors=colour,
                       linewidths=2)  # fmt: skip
        if column == "stability_ari":
            ax.axhline(stable_ari, color="#888", linestyle="--", linewidth=1)
        ax.set_xlabel("number of segments (k)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Each method's candidates; circles: the number it kept")
    figure.tight_layout()
    return figure


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ r.title }}</title>
<style>
 body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
      padding:24px;color:#1d2733;background:#f7f8fa}
 h1{margin:0 0 4px} .muted{color:#5b6b7b} section{margin:28px 0}
 .charts{display:flex;flex-wrap:wrap;gap:16px} .charts img{background:#fff;border:1px solid #e1e5ea;
      border-radius:6px;max-width:100%}
 .kpis{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0}
 .kpi{background:#fff;border:1px solid #e1e5ea;border-radius:6px;padding:8px 12px;min-width:120px}
 .kpi b{display:block;font-size:1.2em}
 .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:16px}
 .card{background:#fff;border:1px solid #e1e5ea;border-radius:8px;padding:16px}
 .card h3{margin:0} .tag{display:inline-block;background:#e8f0fe;border-radius:10px;padding:2px 8px;
      margin:2px;font-size:.85em}
 .warn{background:#fff4e5;border:1px solid #f0b429;border-radius:6px;padding:8px 12px}
 table{border-collapse:collapse;font-size:.85em;width:100%} td,th{padding:3px 6px;text-align:left;
      border-bottom:1px solid #eef0f3} code{font-size:1.05em}
</style></head><body>
<header id="summary"><h1>{{ r.title }}</h1>
<p class="muted">Model {{ r.model }} · snapshot {{ r.as_of }} · {{ "{:,}".format(r.customers) }} customers ·
{{ r.profile|length }} segments · rules reproduce the segment of {{ "%.0f"|format(100 * r.fidelity) }}% of
customers</p>{% if unstable %}<p class="warn" id="unstable"><b>Unstable segments:</b>
{{ unstable }}</p>{% endif %}</header>
<section id="sizes"><h2>Segment sizes and revenue</h2><div class="charts">
<img alt="Segment sizes" src="{{ sizes }}"><img alt="Revenue share" src="{{ revenue }}"></div></section>
{% if tree %}<section id="tree"><h2>Segment tree</h2>
<p>Each broad segment is split into sub-segments for campaigns, named by what sets them apart inside their broad
segment. The assignments and the current segments carry both levels (<code>segment</code>,
<code>sub_segment</code>).</p>
<table><tr><th>segment</th><th>customers</th><th>share</th><th>revenue share</th><th>what sets it apart in its
segment</th></tr>
{% for b in tree %}<tr class="broad" id="tree-{{ b.id }}"><td><b>{{ b.name }}</b> <span class="muted">· segment
{{ b.id }}</span></td><td>{{ "{:,}".format(b.customers) }}</td><td>{{ b.share }}</td><td>{{ b.revenue }}</td><td>
{{ "stays whole" if b.children|length == 1 else b.children|length ~ " sub-segments" }}</td></tr>
{% if b.children|length > 1 %}{% for c in b.children %}<tr id="sub-segment-{{ c.id }}"><td style="padding-left:2em">
└ {{ c.name }} <span class="muted">· sub-segment {{ c.id }}</span></td><td>{{ "{:,}".format(c.customers) }}</td>
<td>{{ c.share }}</td><td>{{ c.revenue }}</td><td>{% for f, z in c.distinct %}<span class="tag">{{ f }}
{{ "%+.1f"|format(z) }} sd</span>{% endfor %}</td></tr>{% endfor %}{% endif %}
{% endfor %}</table></section>{% endif %}
<section id="heatmap"><h2>Profile heatmap</h2><div class="charts"><img alt="Profile heatmap" src="{{ heatmap }}">
</div></section>
<section id="segments"><h2>Segments</h2><div class="cards">
{% for s in segments %}<div class="card" id="segment-{{ s.id }}">
<h3>{{ s.name }} <span class="muted">· segment {{ s.id }}</span></h3>
<p>{{ s.description }}</p>
<div class="kpis">
 <div class="kpi">customers<b>{{ "{:,}".format(s.customers) }}</b>{{ "%.1f"|format(100 * s.customer_share) }}%</div>
 <div class="kpi">revenue share<b>{{ "%.1f"|format(100 * s.revenue_share) }}%</b></div>
 <div class="kpi">value / customer<b>{{ s.historical }}</b>next {{ horizon }} d: {{ s.forward }}</div>
{% if s.clv %} <div class="kpi">alive (BG/NBD)<b>{{ s.p_alive }}</b>mean P(alive)</div>
 <div class="kpi">CLV / customer<b>{{ s.clv_mean }}</b>total {{ s.clv_total }} · {{ s.expected_purchases }} purchases
expected</div>
{% else %} <div class="kpi">churn rate<b>{{ s.churn }}</b></div>
{% endif %}</div>
<h4>Who is in it</h4>{% if s.rules %}<table><tr><th>rule</th><th>customers</th><th>precision</th><th>recall</th></tr>
{% for rule in s.rules %}<tr><td><code>{{ rule.rule }}</code></td><td>{{ rule.coverage }}</td>
<td>{{ "%.0f"|format(100 * rule.precision) }}%</td><td>{{ "%.0f"|format(100 * rule.recall) }}%</td></tr>
{% endfor %}</table>{% else %}<p class="muted">No leaf of the rule tree predicts this segment; see the separating
features.</p>{% endif %}
<h4>What sets it apart</h4><p>{% for f, z in s.separating %}<span class="tag">{{ f }} {{ "%+.1f"|format(z) }} sd
</span>{% endfor %}</p>
<h4>Recommended categories</h4><p>{% for c, lift in s.recommendations %}<span class="tag">{{ c }} ×{{
"%.1f"|format(lift) }}</span>{% else %}<span class="muted">none above the base rate</span>{% endfor %}</p>
</div>{% endfor %}</div></section>
{% if choice %}<section id="choice"><h2>How the number of segments was chosen</h2>
{% for sentence in choice.sentences %}<p>{{ sentence }}</p>{% endfor %}
<div class="charts"><img alt="How k was chosen" src="{{ choice.figure }}"></div>
<table><tr><th>method</th><th>segments</th><th>silhouette</th><th>stability</th><th>smallest segment</th><th></th></tr>
{% for f in choice.finalists %}<tr><td>{{ f.algorithm }}</td><td>{{ f.k }}</td><td>{{ f.silhouette }}</td>
<td>{{ f.stability }}</td><td>{{ f.smallest }}</td><td>{{ "champion" if f.champion else "" }}</td></tr>
{% endfor %}</table></section>{% endif %}
{% if outliers %}<section id="outliers"><h2>Outliers</h2>
<p>{{ "{:,}".format(outliers.customers) }} customers ({{ outliers.share }}) are in no dense region of the customer
space: they keep their segment above, but buy unlike anyone near them, so look at them one by one before a campaign
(resellers, staff accounts, fraud, data errors). Found by density clustering (DBSCAN) on a sample of customers;
they carry <code>is_outlier</code> in the assignments and the current segments.</p>
{% if outliers.customers %}<div class="kpis">
 <div class="kpi">revenue share<b>{{ outliers.revenue_share }}</b></div>
 <div class="kpi">value / customer<b>{{ outliers.historical }}</b></div></div>
<h4>What sets them apart</h4><table><tr><th>feature</th><th>outliers' mean</th><th>against all customers</th></tr>
{% for f in outliers.features %}<tr><td>{{ f.name }}</td><td>{{ f.mean }}</td><td>{{ f.z }} sd</td></tr>
{% endfor %}</table>{% endif %}</section>{% endif %}
</body></html>
"""


def _money(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):,.0f}"


def _percent(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * float(value):.0f}%"


def _number(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):,.1f}"


def render_report(r: SegmentReport, horizon_days: int = 365) -> str:
    profile = r.profile.sort_values("segment")
    labels = [f"{r.names[int(s)]} ({int(s)})" for s in profile["segment"]]
    sizes = _png(share_figure(labels, profile["customer_share"].tolist(), "Share of customers", "#4c78a8"))
    revenue = _png(share_figure(labels, profile["revenue_share"].tolist(), "Share of revenue", "#f58518"))
    features = r.heatmap_features or [c[2:] for c in profile.columns if c.startswith("z_")]
    z = pd.DataFrame({f: profile[f"z_{f}"].to_numpy(float) for f in features}, index=labels)
    heatmap = _png(heatmap_figure(z))
    segments = []
    for _, row in profile.iterrows():
        s = int(row["segment"])
        churn = row.get("churn_rate")
        segments.append(
            {
                "id": s,
                "name": r.names[s],
                "description": r.descriptions.get(s, ""),
                "customers": int(row["customers"]),
                "customer_share": float(row["customer_share"]),
                "revenue_share": float(row["revenue_share"]),
                "historical": _money(row.get("historical_value")),
                "forward": _money(row.get("forward_value")),
                "churn": "n/a" if churn is None or pd.isna(churn) else f"{100 * float(churn):.0f}%",
                # Where the CLV job scored the snapshot, the fitted P(alive) replaces the gap rule's churn rate.
                "clv": not pd.isna(row.get("p_alive_mean", float("nan"))),
                "p_alive": _percent(row.get("p_alive_mean")),
                "clv_mean": _money(row.get("clv_mean")),
                "clv_total": _money(row.get("clv_total")),
                "expected_purchases": _number(row.get("expected_purchases_mean")),
                "rules": r.rules.get(s, [])[:3],
                "separating": r.separating.get(s, []),
                "recommendations": r.recommendations.get(s, []),
            }
        )
    choice, unstable = _choice(r.choice)
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(_TEMPLATE).render(
        r=r,
        sizes=sizes,
        revenue=revenue,
        heatmap=heatmap,
        segments=segments,
        horizon=horizon_days,
        choice=choice,
        unstable=unstable,
        outliers=_outliers(r.outliers, r.customers),
        tree=_tree(r.tree),
    )


def _tree(tree: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    """The tree panel's data: each broad segment with its size, shares and sub-segments."""
    if tree is None or tree.empty:
        return None
    broad = []
    for segment, rows in tree.groupby("segment", sort=True):
        children = [
            {"id": int(r["sub_segment"]), "name": r["sub_segment_name"], "customers": int(r["customers"]),
             "share": _percent1(r["customer_share"]), "revenue": _percent1(r["revenue_share"]),
             "distinct": list(r["distinct"])}
            for _, r in rows.sort_values("customers", ascending=False).iterrows()
        ]  # fmt: skip
        broad.append({"id": int(segment), "name": rows["segment_name"].iloc[0], "children": children,
                      "customers": int(rows["customers"].sum()), "share": _percent1(rows["customer_share"].sum()),
                      "revenue": _percent1(rows["revenue_share"].sum())})  # fmt: skip
    return broad


def _outliers(profile: dict[str, Any] | None, customers: int, n_features: int = 6) -> dict[str, Any] | None:
    """The outlier panel's data: their count and shares, and the features where their mean is
    farthest from every customer's, in standard deviations."""
    if profile is None:
        return None
    count = int(profile.get("customers", 0))
    z = {k[2:]: float(v) for k, v in profile.items() if k.startswith("z_") and not pd.isna(v)}
    top = sorted(z, key=lambda f: -abs(z[f]))[:n_features]
    return {
        "customers": count,
        "share": _percent1(count / customers if customers else None),
        "revenue_share": _percent1(profile.get("revenue_share")),
        "historical": _money(profile.get("historical_value")),
        "features": [{"name": f, "mean": f"{float(profile[f'mean_{f}']):,.2f}", "z": f"{z[f]:+.1f}"} for f in top],
    }


def _choice(panel: ChoicePanel | None) -> tuple[dict[str, Any] | None, str | None]:
    """The panel's template data, and the unstable-segmentation message for the summary (or None)."""
    if panel is None:
        return None, None
    rationale = panel.rationale
    chosen = {a: int(p["chosen_k"]) for a, p in rationale["per_algorithm"].items()}
    verdict = rationale.get("stability", {})
    records = panel.sweep.set_index(["algorithm", "k"])
    finalists = []
    for algorithm, k in chosen.items():
        row = records.loc[(algorithm, k)]
        finalists.append({
            "algorithm": algorithm, "k": k, "silhouette": _number2(row.get("silhouette")),
            "stability": _number2(row.get("stability_ari")), "smallest": _percent1(row.get("min_cluster_share")),
            "champion": algorithm == rationale["champion"]["algorithm"],
        })  # fmt: skip
    figure = _png(choice_figure(panel.sweep, chosen, float(verdict.get("threshold", 0.9))))
    data = {"sentences": describe_choice(rationale), "figure": figure, "finalists": finalists}
    return data, verdict.get("message") if verdict.get("stable") is False else None


def _number2(value: Any) -> str:
    return "not measured" if value is None or pd.isna(value) else f"{float(value):.2f}"


def _percent1(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"
