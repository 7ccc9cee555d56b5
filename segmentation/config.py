"""Typed, validated job configuration.

Configuration is YAML: ``conf/base.yaml`` holds every default, and an overlay
(``conf/local.yaml``, ``conf/cluster.yaml``, ``conf/databricks.yaml`` or a file
of the user's) changes only what differs. Files are deep-merged in the order
given, then ``--set dotted.key=value`` overrides are applied, and the result is
validated once into frozen pydantic objects. Unknown keys and wrong types are
rejected with a :class:`ConfigError` that names the dotted key and the file (or
``--set``) that supplied it.

Sections are kept apart on purpose: ``spark`` (engine settings), ``input`` and
``*.output`` (IO locations), and ``features`` / ``training`` (business
parameters).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segmentation.errors import ConfigError

__all__ = [
    "AppConfig",
    "ConfigError",
    "default_config_files",
    "load_config",
]

TableFormat = Literal["delta", "parquet", "csv"]
OutputFormat = Literal["delta", "parquet"]

REQUIRED_TRANSACTION_ROLES = ("customer_id", "timestamp", "amount")
OPTIONAL_TRANSACTION_ROLES = ("transaction_id", "basket_id", "product_id", "quantity", "category", "channel")
TimestampUnit = Literal["seconds", "milliseconds", "microseconds", "nanoseconds"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _stringify(value: Any) -> Any:
    """Spark settings and reader options are strings; accept YAML scalars (7, true) for them."""
    if isinstance(value, Mapping):
        return {
            k: str(v).lower() if isinstance(v, bool) else v if isinstance(v, str) else str(v) for k, v in value.items()
        }
    return value


class SparkConfig(_Section):
    """Engine settings. Ignored where a session already exists (Databricks, spark-submit)."""

    master: str = "local[*]"
    # A Spark Connect server to use instead of a classic session: ``sc://host:15002``, or
    # ``local[2]`` for one started in-process. The standard SPARK_REMOTE variable does the same.
    remote: str | None = None
    app_name: str = "customer-segmentation"
    # 0 means "size to the cores": 2 x defaultParallelism, at least 4, and for the feature job
    # also to its input, one partition per ``rows_per_shuffle_partition`` rows if that is more.
    shuffle_partitions: int = Field(0, ge=0)
    # Read by the feature job in every session, an existing one included (see segmentation.spark).
    rows_per_shuffle_partition: int = Field(5_000_000, ge=1)
    driver_memory: str = "4g"
    ui_enabled: bool = True
    # Download the Delta Lake jars from Maven Central when Spark is started from
    # plain Python. On a cluster the jars come with spark-submit --packages or the
    # runtime, and nothing is downloaded.
    delta_from_maven: bool = True
    log_level: str = "WARN"
    conf: dict[str, str] = Field(default_factory=dict)

    _conf_strings = field_validator("conf", mode="before")(_stringify)


class TableConfig(_Section):
    """Where a table lives: a path with a format, or a catalog table name."""

    path: str | None = None
    format: TableFormat = "delta"
    table: str | None = None
    options: dict[str, str] = Field(default_factory=dict)

    _option_strings = field_validator("options", mode="before")(_stringify)

    @model_validator(mode="after")
    def _path_or_table(self) -> TableConfig:
        if self.path and self.table:
            raise ValueError("give either 'path' or 'table', not both (set path: null to use a catalog table)")
        return self

    @property
    def location(self) -> str:
        return self.table or self.path or "<unset>"


class TransactionsInput(TableConfig):
    """Transactions source and the mapping of roles to the user's column names."""

    # A role mapped to null (or removed) is absent from the input.
    columns: dict[str, str | None] = Field(
        default_factory=lambda: {
            "customer_id": "customer_id",
            "timestamp": "timestamp",
            "amount": "amount",
            "transaction_id": "transaction_id",
            "basket_id": "basket_id",
            "product_id": "product_id",
            "quantity": "quantity",
            "category": "category",
            "channel": "channel",
        }
    )
    # Unit of an integer timestamp column (epoch seconds, milliseconds...); None = a timestamp,
    # date or string column. Parquet nanosecond timestamps (pandas, pyarrow) need no setting.
    timestamp_unit: TimestampUnit | None = None

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        known = set(REQUIRED_TRANSACTION_ROLES) | set(OPTIONAL_TRANSACTION_ROLES)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown column role(s) {unknown}; known roles are {sorted(known)}")
        missing = [r for r in REQUIRED_TRANSACTION_ROLES if not value.get(r)]
        if missing:
            raise ValueError(f"required column role(s) {missing} are not mapped")
        return {role: name for role, name in value.items() if name}

    @property
    def explicit_roles(self) -> frozenset[str]:
        """Optional roles mapped to a name of the user's own (not the role's default name).

        An optional role left at its default name is skipped when the input has no such
        column; one mapped explicitly must exist (see ``segmentation.quality.resolve_roles``).
        """
        return frozenset(role for role, name in self.columns.items() if name != role)


class CustomersInput(TableConfig):
    """Optional customer attributes (age, income, region...) joined for demographic features."""

    enabled: bool = False
    customer_id: str = "customer_id"
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    # Categorical levels beyond this many (by customer count) are pooled into "other".
    max_levels: int = Field(10, ge=1)
    # The job stops when a smaller share of the customers has a row in this table.
    min_match_share: float = Field(0.5, ge=0.0, le=1.0)


class ProductsInput(TableConfig):
    """Optional product dimension joined to the transactions on the ``product_id`` role."""

    enabled: bool = False
    product_id: str = "product_id"
    # Column giving each line its category (replaces the transactions' category role); None = keep it.
    category: str | None = "category"
    # Other categorical attributes (brand, department...): a share of gross spend per top level.
    attributes: list[str] = Field(default_factory=list)
    # The job stops when a smaller share of the kept lines finds its product in this table.
    min_match_share: float = Field(0.5, ge=0.0, le=1.0)


class InputConfig(_Section):
    transactions: TransactionsInput = Field(default_factory=lambda: TransactionsInput(path="data/transactions"))
    customers: CustomersInput = Field(default_factory=lambda: CustomersInput(path="data/customers"))
    products: ProductsInput = Field(default_factory=lambda: ProductsInput(path="data/products"))


class OutputConfig(TableConfig):
    """Where an output table goes: Delta (default) or Parquet at a path, or a catalog table."""

    format: OutputFormat = "delta"


DEFAULT_PERSONAS = ("champions", "loyal", "big_spenders", "new", "at_risk", "hibernating", "one_time")


class PersonaSetConfig(_Section):
    """Which personas the generator plants, in what shares and how far apart (segmentation.generator)."""

    # Names from segmentation.generator.CATALOGUE: the seven shipped ones, returners, bulk_buyers, app_regulars.
    names: tuple[str, ...] = DEFAULT_PERSONAS
    # Fixed customer shares for some of them; the others split the rest in their catalogue proportions.
    shares: dict[str, float] = Field(default_factory=dict)
    # 1 = as defined; lower pulls every persona's behaviour toward the average persona (0 = all alike).
    separation: float = Field(1.0, ge=0.0, le=1.0)
    # Share of customers planted as outliers far from every persona: each buys like a small business of
    # its own (very large baskets of many items), so they form no group (ground truth label "outlier").
    outlier_share: float = Field(0.0, ge=0.0, le=0.1)

    @model_validator(mode="after")
    def _consistent(self) -> PersonaSetConfig:
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"names must be distinct and not empty, got {list(self.names)}")
        unknown = sorted(set(self.shares) - set(self.names))
        if unknown:
            raise ValueError(f"shares names personas not in names: {unknown}")
        fixed = sum(self.shares.values())
        if any(v <= 0 for v in self.shares.values()) or fixed > 1.0 + 1e-9:
            raise ValueError(f"shares must be positive and sum to at most 1, got {self.shares}")
        if len(self.shares) == len(self.names) and abs(fixed - 1.0) > 1e-6:
            raise ValueError(f"shares give every persona a share, so they must sum to 1, got {fixed:g}")
        if len(self.shares) < len(self.names) and fixed >= 1.0:
            raise ValueError(f"shares sum to {fixed:g}, leaving nothing for the other personas")
        return self


class GeneratorConfig(_Section):
    """Synthetic transactions: size, seed, the planted personas and where to write them."""

    n_transactions: int = Field(1_000_000, ge=1)
    # 0 means one customer per 20 transactions.
    n_customers: int = Field(0, ge=0)
    seed: int = 42
    start_date: dt.date = dt.date(2023, 1, 1)
    end_date: dt.date = dt.date(2024, 12, 31)
    duplicate_share: float = Field(0.001, ge=0.0, lt=0.5)
    partitions: int = Field(0, ge=0)
    personas: PersonaSetConfig = Field(default_factory=PersonaSetConfig)
    transactions: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/transactions"))
    customers: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/customers"))
    ground_truth: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/ground_truth"))

    @model_validator(mode="after")
    def _dates_ordered(self) -> GeneratorConfig:
        if self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        return self


class FeaturesConfig(_Section):
    """Business parameters of the feature job; all durations are in days."""

    # End of the observation window, inclusive. None: the day after the newest transaction.
    as_of: dt.date | None = None
    top_categories: int = Field(8, ge=1)
    max_channels: int = Field(5, ge=1)
    trend_window_days: int = Field(90, ge=1)
    churn_gap_multiple: float = Field(3.0, gt=0)
    # Share of input rows that may be quarantined before the job fails.
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/features"))
    quarantine: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/features_quarantine"))
    # One row of data-quality counts per snapshot; the training job logs it to MLflow.
    quality: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/features_quality"))


# The default candidates: Spark MLlib's. "density" (DBSCAN on a sample, segmentation.density) is a fourth
# that training.algorithms may name.
ALGORITHMS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")
DENSITY = "density"
Algorithm = Literal["kmeans", "bisecting_kmeans", "gaussian_mixture", "density"]


class KMeansParams(_Section):
    max_iter: int = Field(20, ge=1)
    tol: float = Field(1e-4, ge=0)
    init_mode: Literal["k-means||", "random"] = "k-means||"
    init_steps: int = Field(2, ge=1)
    distance_measure: Literal["euclidean", "cosine"] = "euclidean"
    # "block" stacks rows into matrices and uses BLAS level 3: the same centres as "row",
    # 4.6x faster here (475,954 x 30, k=8, 20 iterations: 7.7 s against 35.6 s; see make bench).
    solver: Literal["auto", "row", "block"] = "block"
    restarts: int | None = Field(None, ge=1)  # None: training.restarts


class BisectingKMeansParams(_Section):
    # Passes per level of the tree (MLlib's bisecting k-means has no tolerance, so it always runs
    # them all). 15 gave the same fits as 20 on the demo's customers, 26% faster (docs/performance.md).
    max_iter: int = Field(15, ge=1)
    min_divisible_cluster_size: float = Field(1.0, gt=0)
    distance_measure: Literal["euclidean", "cosine"] = "euclidean"
    restarts: int | None = Field(None, ge=1)  # None: training.restarts


class GaussianMixtureParams(_Section):
    # MLlib's EM rarely meets `tol` on behavioural features (components collapse onto point masses
    # and the log-likelihood keeps moving); 30 iterations gave the 100-iteration segments (ARI >=
    # 0.988) in a third of the time on the demo's customers (docs/performance.md).
    max_iter: int = Field(30, ge=1)
    tol: float = Field(0.01, ge=0)
    restarts: int | None = Field(None, ge=1)  # None: training.restarts


class PcaConfig(_Section):
    """Optional PCA: a fixed number of components, or the fewest reaching an explained-variance target."""

    components: int | None = Field(None, ge=1)
    variance: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_of(self) -> PcaConfig:
        if self.components is not None and self.variance is not None:
            raise ValueError("set pca.components or pca.variance, not both")
        return self


class SelectionConfig(_Section):
    """Inputs of the documented k / champion rule (segmentation.selection)."""

    # k selection runs on a Bernoulli sample of about this many customers (sample(fraction): a few more or
    # fewer); the champion is refitted on all.
    sample_size: int = Field(200_000, ge=100)
    min_cluster_share: float = Field(0.02, ge=0, lt=1)
    min_stability: float = Field(0.7, ge=-1, le=1)
    # The champion's stability at which its segments are reported stable; under it, the log, the
    # rationale and the report say so and name the most stable candidate measured.
    stable_ari: float = Field(0.9, ge=-1, le=1)
    # Number of seeds per (algorithm, k); 1 disables the stability check.
    stability_seeds: int = Field(2, ge=1)
    # "shortlist": refit with the other seeds only the candidates the rule needs (same pick,
    # about a third of the refits; segmentation.selection). "all": every candidate, for the
    # full stability curve in the MLflow compare view.
    stability_scope: Literal["shortlist", "all"] = "shortlist"
    silhouette_tolerance: float = Field(0.01, ge=0)
    # How k is picked: bisecting (BisectingKMeans' best silhouette at or above its elbow sets the number,
    # every algorithm takes its best silhouette within one of it), silhouette (each algorithm's best over
    # the range, GaussianMixture by BIC) or elbow (docs/training.md, Planted personas, measures all three).
    k_criterion: Literal["silhouette", "elbow", "bisecting"] = "bisecting"
    # Candidates fitted at once from driver threads. MLlib's per-iteration jobs on a sample leave
    # cores idle between them; two threads fit the KMeans sweep 1.7x faster on 2 cores (make bench).
    parallelism: int = Field(2, ge=1)


class RefitConfig(_Section):
    """How many customers the champion is refitted on; every customer is assigned either way."""

    # None: all of them. A number: all of them up to that many, and above it a uniform sample of
    # about that many (sample(fraction) seeded with training.seed: one larger than the sweep's
    # sample contains it), for the algorithms in sample_algorithms only.
    max_customers: int | None = Field(200_000, ge=1000)
    # BisectingKMeans fitted on 50k to 200k sampled customers assigns them as its full refit does
    # (adjusted Rand index 0.994 to 0.999 at 476k customers, docs/performance.md); KMeans and
    # GaussianMixture on a sample do not (0.50 to 0.74), so they are refitted on everyone.
    sample_algorithms: list[Algorithm] = Field(default_factory=lambda: ["bisecting_kmeans"])

    def sample_fraction(self, algorithm: str, customers: int) -> float | None:
        """The share of ``customers`` an ``algorithm`` champion is refitted on; None for all of them."""
        if algorithm not in self.sample_algorithms or self.max_customers is None or customers <= self.max_customers:
            return None
        return self.max_customers / customers


class DensityConfig(_Section):
    """DBSCAN on a sample, extended to every customer: the outlier flag, and the "density" candidate
    when training.algorithms names it (segmentation.density)."""

    # Add is_outlier (no dense region near the customer) to the assignments, the current table and the report.
    flag_outliers: bool = False
    # DBSCAN runs on a uniform sample of about this many customers (scikit-learn, on the driver).
    sample_size: int = Field(20000, ge=100)
    # min_samples as a share of the sample (at least 10): a group of fewer customers cannot be dense.
    min_samples_share: float = Field(0.01, gt=0.0, le=0.2)
    # None: the knee of the sample's k-distance curve (each fit its own: the flag's and the candidate's).
    eps: float | None = Field(None, gt=0.0)
    # With flag_outliers: leave the flagged customers out of the sweep and the champion's fit (they are
    # still assigned a segment), so they neither choose k nor pull a centre. Off: on the one data set
    # measured it did not bring the champion closer to the planted personas (docs/training.md, Outliers).
    fit_without_outliers: bool = False


class HierarchyConfig(_Section):
    """Two levels of segments (segmentation.hierarchy): broad segments, each split into sub-segments."""

    enabled: bool = False
    # The broad level's k range; it replaces training.k_min..k_max when the hierarchy is on.
    broad_k: tuple[int, int] = (3, 6)
    # Each broad segment's sub-segment k range, chosen by the same rule with the champion's algorithm.
    sub_k: tuple[int, int] = (2, 4)
    # A sub-segment holds at least this many customers (a broad segment is split only when a split
    # by the rule respects it); smaller broad segments stay whole, as one sub-segment.
    min_customers: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> HierarchyConfig:
        for name, (low, high) in (("broad_k", self.broad_k), ("sub_k", self.sub_k)):
            if not 2 <= low <= high:
                raise ValueError(f"hierarchy.{name} must be [low, high] with 2 <= low <= high, got {[low, high]}")
        return self


class GroundTruthConfig(TableConfig):
    """Planted segments (synthetic data) to measure recovery; never used as a feature."""

    enabled: bool = False
    label_column: str = "segment"


class IdentityConfig(_Section):
    """Stable segment ids across retrains (segmentation.identity)."""

    method: Literal["overlap", "centroid"] = "overlap"
    min_overlap: float = Field(0.5, gt=0, le=1)
    max_centroid_distance: float = Field(1.0, gt=0)


DEFAULT_EXCLUDE = (
    "churned", "age", "income", "region_*", "frequency", "recency", "T", "monetary_value", "n_transactions",
    "n_purchases",
)  # fmt: skip


class TrainingConfig(_Section):
    """Preprocessing, the k sweep, selection and outputs of the training job."""

    # Feature snapshot to train on; None = the newest as_of in features.output.
    as_of: dt.date | None = None
    # None = every numeric column except customer_id / as_of and those in `exclude`.
    features: list[str] | None = None
    # Names or shell-style patterns. By default the model clusters on behaviour only: the churn
    # label, customer attributes (described in the profiles instead), the lifetimes summary
    # columns, which repeat n_purchase_days, tenure_days and avg_basket_value in other units, and
    # n_transactions (n_purchases + n_returns) are left out so no behaviour is counted twice. So is
    # n_purchases (purchase lines): it is n_baskets x avg_lines_per_basket with a basket_id and
    # equal to n_baskets without one, so the model counts purchase occasions once, as n_baskets.
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    # "auto": money, count and duration columns (see segmentation.preprocessing.AUTO_LOG_PATTERN).
    log_features: list[str] | Literal["auto"] = "auto"
    cap_quantiles: tuple[float, float] | None = (0.01, 0.99)
    pca: PcaConfig = Field(default_factory=PcaConfig)
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(ALGORITHMS))
    k_min: int = Field(2, ge=2)
    k_max: int = Field(12, ge=2)
    seed: int = 42
    # Every fit (sweep, stability, refit) is the best of this many starts (segmentation.models.fit_best),
    # unless the algorithm's own section sets restarts (training.kmeans.restarts, ...).
    restarts: int = Field(1, ge=1)
    # Seconds one start of one fit may take before its Spark jobs are interrupted and it is
    # retried from another seed (segmentation.models.fit_within); None waits forever.
    fit_timeout_seconds: float | None = Field(3600.0, gt=0)
    kmeans: KMeansParams = Field(default_factory=KMeansParams)
    bisecting_kmeans: BisectingKMeansParams = Field(default_factory=BisectingKMeansParams)
    gaussian_mixture: GaussianMixtureParams = Field(default_factory=GaussianMixtureParams)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    refit: RefitConfig = Field(default_factory=RefitConfig)
    density: DensityConfig = Field(default_factory=DensityConfig)
    hierarchy: HierarchyConfig = Field(default_factory=HierarchyConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    ground_truth: GroundTruthConfig = Field(default_factory=lambda: GroundTruthConfig(path="data/ground_truth"))
    # Register the champion in the model registry. False logs the model only.
    register_model: bool = True
    # Move mlflow.alias to the new version: "auto" only when no version has the alias yet
    # (the first model), "always" promotes every retrain, "never" registers a challenger.
    # Promoting a retrain over a champion is therefore explicit.
    promote: Literal["auto", "always", "never"] = "auto"
    assignments: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/segment_assignments"))

    def restarts_for(self, algorithm: str) -> int:
        """Starts per fit of ``algorithm``: its section's ``restarts``, else ``training.restarts``."""
        own = getattr(self, algorithm).restarts if algorithm in ALGORITHMS else None
        return self.restarts if own is None else own

    @model_validator(mode="after")
    def _ranges(self) -> TrainingConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        if self.cap_quantiles is not None:
            low, high = self.cap_quantiles
            if not 0.0 <= low < high <= 1.0:
                raise ValueError(f"cap_quantiles must satisfy 0 <= low < high <= 1, got {list(self.cap_quantiles)}")
        if not self.algorithms:
            raise ValueError("algorithms must name at least one of " + ", ".join((*ALGORITHMS, DENSITY)))
        return self


class ProfilesConfig(_Section):
    """Segment profiles, personas, rules and the HTML report (segmentation.profiles, personas, report)."""

    # Persona name overrides by segment id, e.g. {3: "Weekend gardeners"}.
    names: dict[int, str] = Field(default_factory=dict)
    # Depth of the decision tree whose rules explain each segment.
    rule_depth: int = Field(3, ge=1, le=6)
    # Horizon of the simple forward value estimate (see segmentation.profiles).
    value_horizon_days: int = Field(365, ge=1)
    # Categories with the highest lift shown per segment.
    top_recommendations: int = Field(3, ge=1)
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/segment_profiles"))
    report_dir: str = "reports"


class ScoringConfig(_Section):
    """The scoring job: which model, which snapshot, where the assignments go."""

    # Registered model version to score with; None = the version behind mlflow.alias.
    model_version: int | None = Field(None, ge=1)
    # Feature snapshot to score; None = the newest as_of in features.output.
    as_of: dt.date | None = None
    # Recompute features from input.transactions for as_of before scoring: the scoring job (and notebook 4)
    # run the feature job first (feature_pipeline.features_for_scoring); run_scoring itself only reads.
    compute_features: bool = False
    current: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/segments_current"))
    history: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/segments_history"))
    # A feature whose population stability index exceeds this marks the snapshot as needing retraining.
    psi_threshold: float = Field(0.25, gt=0)
    # Largest segment share shift before retraining is recommended: the total variation distance of the
    # segment shares, 0.5 * sum over segments of |new share - old share| (0 = same mix, 1 = disjoint).
    share_shift_threshold: float = Field(0.10, gt=0, le=1)
    # Carry the CLV job's values (clv.output) of the newest CLV snapshot on or before the scored one
    # into the current table: clv_as_of, p_alive, expected_purchases, expected_avg_value, clv.
    attach_clv: bool = True


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    registry_uri: str | None = None
    experiment: str = "customer-segmentation"
    # Where a new experiment stores artifacts; None lets the server decide.
    artifact_location: str | None = "mlartifacts"
    registered_model: str = "customer-segments"
    alias: str = "champion"
    # Where Spark models pass between Spark and this process under Spark Connect (MLflow's
    # MLFLOW_DFS_TMP): a Unity Catalog Volume on Databricks serverless, a directory the server
    # and the job both see on an open-source Connect server. None keeps MLFLOW_DFS_TMP or MLflow's /tmp/mlflow.
    dfs_tmpdir: str | None = None


class ClvConfig(_Section):
    """Customer lifetime value (BG/NBD + Gamma-Gamma, segmentation.clv); durations in days."""

    # Feature snapshot to fit on; None = the newest as_of in features.output.
    as_of: dt.date | None = None
    # lifetimes' penalizer_coef: penalizer * sum(params**2) added to the mean negative log-likelihood.
    penalizer: float = Field(0.0, ge=0)
    horizon_days: int = Field(365, ge=1)
    # Discount rate per year applied to the expected purchases of the horizon.
    annual_discount_rate: float = Field(0.1, ge=0)
    # Days at the end of the transactions held out to validate the fit; None = no holdout.
    holdout_days: int | None = Field(None, ge=1)
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(path="data/customer_clv"))
    registered_model: str = "customer-clv"


class AppConfig(_Section):
    spark: SparkConfig = Field(default_factory=SparkConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    clv: ClvConfig = Field(default_factory=ClvConfig)


# --------------------------------------------------------------------------- loading

PROJECT_CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # a checkout: the repository's conf/
PACKAGED_CONF_DIR = Path(__file__).resolve().parent / "conf"  # an installed wheel: conf/ as package data


def default_config_files(env: str = "local", conf_dir: Path | None = None) -> list[Path]:
    """``base.yaml`` plus the ``<env>.yaml`` overlay from ``conf_dir``; by default from ./conf when it
    holds a ``base.yaml``, else from the config installed with the package (the wheel's copy of
    conf/, or the checkout's). A missing overlay is an error, never a silent fallback."""
    candidates = [conf_dir] if conf_dir else [Path.cwd() / "conf", PACKAGED_CONF_DIR, PROJECT_CONF_DIR]
    directory = next((d for d in candidates if (d / "base.yaml").is_file()), None)
    if directory is None:
        raise ConfigError(f"no base.yaml in {' or '.join(map(str, candidates))}; pass the config files with --config")
    files = [directory / "base.yaml"]
    if env != "base":
        overlay = directory / f"{env}.yaml"
        if not overlay.is_file():
            known = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")
            raise ConfigError(f"config overlay for env '{env}' not found: {overlay} (overlays there: {known})")
        files.append(overlay)
    return files


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _merge(
    base: dict[str, Any], overlay: Mapping[str, Any], source: str, origins: dict[str, str], prefix: str = ""
) -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``; record which source set each dotted key."""
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, origins, dotted + ".")
        else:
            base[key] = _plain(value)
            origins[dotted] = source
            _mark_children(value, dotted, source, origins)
    return base


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _mark_children(value: Any, dotted: str, source: str, origins: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            origins[f"{dotted}.{k}"] = source
            _mark_children(v, f"{dotted}.{k}", source, origins)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects dotted.key=value, got '{item}'")
    key, raw = item.split("=", 1)
    parts = _split_key(key.strip())
    if not parts:
        raise ConfigError(f"--set has an empty key in '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def _split_key(key: str) -> list[str]:
    """Split a dotted key, keeping the tail whole below a free-form mapping.

    ``spark.conf.spark.sql.shuffle.partitions`` is the key
    ``spark.sql.shuffle.partitions`` inside ``spark.conf``.
    """
    parts = [p for p in key.split(".") if p]
    model: type[BaseModel] | None = AppConfig
    for i, part in enumerate(parts):
        field = model.model_fields.get(part) if model else None
        if field is None:
            return parts
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if getattr(annotation, "__origin__", None) is dict and i + 1 < len(parts):
            return parts[: i + 1] + [".".join(parts[i + 1 :])]
        return parts
    return parts


def _source_of(dotted: str, origins: Mapping[str, str]) -> str:
    probe = dotted
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return "defaults"


def load_config(
    files: Sequence[str | Path] | None = None,
    overrides: Iterable[str] = (),
) -> AppConfig:
    """Merge ``files`` in order, apply ``key=value`` overrides, and validate.

    ``files=None`` means the default files (``conf/base.yaml`` + ``conf/local.yaml``).
    """
    paths = default_config_files() if files is None else [Path(f) for f in files]
    # Start from the typed defaults so a partial mapping (one column role, say) keeps the rest.
    merged: dict[str, Any] = AppConfig().model_dump(mode="python")
    origins: dict[str, str] = {}
    for path in paths:
        _merge(merged, _read_yaml(path), str(path), origins)
    for item in overrides:
        parts, value = _parse_override(item)
        nested: dict[str, Any] = {}
        cursor = nested
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        _merge(merged, nested, f"--set {item}", origins)
    try:
        return AppConfig.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            dotted = ".".join(str(p) for p in err["loc"])
            problems.append(f"{dotted or '<root>'} (from {_source_of(dotted, origins)}): {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
