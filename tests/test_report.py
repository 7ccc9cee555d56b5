from __future__ import annotations

import re

import pandas as pd

from segmentation.report import SegmentReport, render_report


def test_report_renders_every_section_self_contained_and_escaped():
    profile = pd.DataFrame({
        "segment": [0, 1], "customers": [300, 700], "customer_share": [0.3, 0.7], "revenue_share": [0.8, 0.2],
        "churn_rate": [0.05, float("nan")], "historical_value": [1234.0, 80.0], "forward_value": [900.0, 20.0],
        "z_net_spend": [1.5, -0.6], "z_recency_days": [-1.0, 0.4],
    })  # fmt: skip
    report = SegmentReport(
        title="Customer segments", model="customer-segments v3", as_of="2024-06-30", customers=1000,
        fidelity=0.87, profile=profile, names={0: "Champions", 1: "<script>x</script>"},
        descriptions={0: "Spend the most.", 1: "The rest."},
        rules={0: [{"rule": "net_spend > 500", "coverage": 290, "precision": 0.95, "recall": 0.92}]},
        separating={0: [("net_spend", 1.5)], 1: [("net_spend", -0.6)]},
        recommendations={0: [("jewelry", 2.4)], 1: []},
    )  # fmt: skip
    html = render_report(report)
    for section in ("summary", "sizes", "heatmap", "segments", "segment-0", "segment-1"):
        assert f'id="{section}"' in html
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [alt for alt, _ in images] == ["Segment sizes", "Revenue share", "Profile heatmap"]
    assert all(len(data) > 1000 for _, data in images)
    assert "http" not in html.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "87%" in html and "net_spend &gt; 500" in html and "jewelry ×2.4" in html and "1,234" in html
    assert "none above the base rate" in html and "n/a" in html  # segment 1: no category, unknown churn
