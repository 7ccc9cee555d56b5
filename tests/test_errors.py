from __future__ import annotations

from pyspark.errors.exceptions.connect import SparkException

from segmentation.errors import InputReadError, error_condition, from_spark_failure

# What a Spark Connect server sends for a file it cannot read (captured from pyspark 4.2's server):
# the condition and the file on the exception itself, the cause only in the JVM stack trace text.
TRACE = """org.apache.spark.SparkException
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.cannotReadFilesError(QueryExecutionErrors.scala:940)
Caused by: java.lang.RuntimeException: file:/data/tx/part-0.parquet is not a Parquet file. Expected magic number
\tat org.apache.parquet.hadoop.ParquetFileReader.readFooter(ParquetFileReader.java:600)
"""


def connect_failure(condition: str) -> SparkException:
    return SparkException(
        message=f"[{condition}] Encountered error while reading file file:///data/tx/part-0.parquet.  SQLSTATE: KD001",
        errorClass=condition,
        messageParameters={"path": "file:///data/tx/part-0.parquet"},
        server_stacktrace=TRACE,
    )


def test_a_connect_read_failure_names_the_file_and_the_cause():
    error = from_spark_failure(connect_failure("FAILED_READ_FILE.NO_HINT"))
    assert isinstance(error, InputReadError)
    assert str(error) == (
        "Encountered error while reading file file:///data/tx/part-0.parquet "
        "(file:/data/tx/part-0.parquet is not a Parquet file. Expected magic number); "
        "remove, replace or rewrite that file and rerun"
    )


def test_other_connect_failures_are_not_user_errors():
    assert from_spark_failure(connect_failure("DIVIDE_BY_ZERO")) is None
    assert from_spark_failure(ValueError("plain Python")) is None


def test_error_condition_of_python_and_connect_exceptions():
    assert (
        error_condition(connect_failure("DELTA_CONCURRENT_APPEND.WITHOUT_HINT"))
        == "DELTA_CONCURRENT_APPEND.WITHOUT_HINT"
    )
    assert error_condition(ValueError("no condition")) == ""
