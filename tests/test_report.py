from __future__ import annotations

import re

import pandas as pd

from segmentation.report import ChoicePanel, SegmentReport, render_report
from segmentation.selection import choose


def report_of(**extra) -> SegmentReport:
    profile = pd.DataFrame({
        "segment": [0, 1], "customers": [300, 700], "customer_share": [0.3, 0.7], "revenue_share": [0.8, 0.2],
        "churn_rate": [0.05, float("nan")], "historical_value": [1234.0, 80.0], "forward_value": [900.0, 20.0],
        "z_net_spend": [1.5, -0.6], "z_recency_days": [-1.0, 0.4],
    })  # fmt: skip
    return SegmentReport(
        title="Customer segments", model="customer-segments v3", as_of="2024-06-30", customers=1000,
        fidelity=0.87, profile=profile, names={0: "Champions", 1: "<script>x</script>"},
        descriptions={0: "Spend the most.", 1: "The rest."},
        rules={0: [{"rule": "net_spend > 500", "coverage": 290, "precision": 0.95, "recall": 0.92}]},
        separating={0: [("net_spend", 1.5)], 1: [("net_spend", -0.6)]},
        recommendations={0: [("jewelry", 2.4)], 1: []}, **extra,
    )  # fmt: skip


def test_report_renders_every_section_self_contained_and_escaped():
    html = render_report(report_of())
    for section in ("summary", "sizes", "heatmap", "segments", "segment-0", "segment-1"):
        assert f'id="{section}"' in html
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [alt for alt, _ in images] == ["Segment sizes", "Revenue share", "Profile heatmap"]
    assert all(len(data) > 1000 for _, data in images)
    assert "http" not in html.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "87%" in html and "net_spend &gt; 500" in html and "jewelry ×2.4" in html and "1,234" in html
    assert "none above the base rate" in html and "n/a" in html  # segment 1: no category, unknown churn
    assert 'id="choice"' not in html and 'id="unstable"' not in html  # no sweep given: no panel


def test_the_choice_panel_draws_the_curves_lists_the_finalists_and_flags_an_unstable_champion():
    sweep = pd.DataFrame([
        {"algorithm": a, "k": k, "silhouette": s, "wssse": 100.0 / k, "bic": b, "min_cluster_share": share,
         "stability_ari": ari}
        for a, k, s, b, share, ari in [
            ("kmeans", 2, 0.55, None, 0.30, 0.8), ("kmeans", 3, 0.50, None, 0.21, None),
            ("gaussian_mixture", 2, 0.20, 900.0, 0.40, 0.95), ("gaussian_mixture", 3, 0.25, 800.0, 0.10, 0.6),
        ]
    ])  # fmt: skip
    sweep["bic"] = sweep["bic"].astype(float)
    rationale = choose(sweep.to_dict("records"), ["kmeans", "gaussian_mixture"], 0.02, 0.5, 0.01).rationale
    html = render_report(report_of(choice=ChoicePanel(sweep, rationale)))
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [alt for alt, _ in images][-1] == "How k was chosen" and len(images[-1][1]) > 1000
    panel = html.split('id="choice"', 1)[1]
    assert "The champion is k-means with 2 segments" in panel
    cells = r"<tr><td>(\w+)</td><td>(\d+)</td><td>([^<]+)</td>\s*<td>([^<]+)</td><td>([^<]+)</td><td>(\w*)</td>"
    rows = re.findall(cells, panel)
    assert rows == [("kmeans", "2", "0.55", "0.80", "30.0%", "champion"),
                    ("gaussian_mixture", "3", "0.25", "0.60", "10.0%", "")]  # fmt: skip
    banner = html.split('id="unstable"', 1)[1].split("</p>", 1)[0]  # in the summary, above everything else
    assert "The champion&#39;s segments are not stable" in banner and "ARI 0.800" in banner
    assert "gaussian_mixture with k=2 (ARI 0.950), is." in banner
