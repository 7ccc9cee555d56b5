"""Charts of the k sweep and of the chosen segmentation (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

__all__ = ["migration_heatmap", "sweep_figures", "pca_scatter"]

_CURVES = (
    ("elbow", "wssse", "within-cluster sum of squares (lower is tighter)"),
    ("silhouette", "silhouette", "silhouette (higher is better)"),
    ("bic", "bic", "BIC (lower is better)"),
)


def sweep_figures(sweep: pd.DataFrame) -> dict[str, Figure]:
    """One figure per curve (elbow, silhouette, BIC) with a line per algorithm; k on the x axis."""
    figures = {}
    for name, column, label in _CURVES:
        data = sweep[["algorithm", "k", column]].dropna()
        if data.empty:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for algorithm, rows in data.groupby("algorithm", sort=True):
            rows = rows.sort_values("k")
            ax.plot(rows["k"], rows[column], marker="o", label=algorithm)
        ax.set_xlabel("k (number of segments)")
        ax.set_ylabel(label)
        ax.set_title(f"{name.capitalize()} by k")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        figures[name] = fig
        plt.close(fig)
    return figures


def pca_scatter(df: DataFrame, features_col: str, segment_col: str, seed: int, max_points: int = 5000) -> Figure:
    """2-D PCA projection of a sample of customers, coloured by segment.

    Only ``max_points`` sampled rows reach the driver, where the projection is a plain
    SVD (Spark's distributed PCA is for wide data and fails to converge on some small samples).
    """
    total = df.count()
    sample = df.sample(False, min(1.0, max_points / max(total, 1)), seed) if total > max_points else df
    points = sample.select(vector_to_array(features_col).alias("x"), F.col(segment_col).alias("segment")).toPandas()
    matrix = np.array(points["x"].tolist(), dtype=float).reshape(len(points), -1)
    centred = matrix - matrix.mean(axis=0) if len(points) else matrix
    if len(points) >= 2 and centred.shape[1] >= 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = np.zeros((len(points), 2))
    fig, ax = plt.subplots(figsize=(7, 6))
    for segment in sorted(points["segment"].unique()):
        mask = (points["segment"] == segment).to_numpy()
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.6, label=f"segment {segment}")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"Segments on the first two principal components ({len(points)} customers)")
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    plt.close(fig)
    return fig


def migration_heatmap(counts: pd.DataFrame) -> Figure:
    """Row shares of a migration matrix (old segment rows, new segment columns), annotated with counts."""
    shares = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(counts.columns), 1.0 + 0.6 * len(counts.index)))
    image = ax.imshow(shares.to_numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(counts.columns)), [str(c) for c in counts.columns])
    ax.set_yticks(range(len(counts.index)), [str(i) for i in counts.index])
    ax.set_xlabel("new segment")
    ax.set_ylabel("previous segment")
    for i in range(len(counts.index)):
        for j in range(len(counts.columns)):
            dark = shares.iat[i, j] > 0.6
            ax.text(j, i, f"{int(counts.iat[i, j])}", ha="center", va="center", color="white" if dark else "black")
    ax.set_title("Segment migration (row share, customer counts)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    plt.close(fig)
    return fig
