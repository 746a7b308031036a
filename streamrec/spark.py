"""The one place that builds SparkSessions: master, memory, the Kafka connector jars, and the
settings ALS and the streaming job rely on."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from streamrec import storage
from streamrec.schemas.config import Config
from streamrec.stack.maven import spark_connector_jars


def build_spark(cfg: Config, role: str) -> SparkSession:
    """A SparkSession for ``role`` ("stream", "batch", "test" ...).

    The connector jars come from the Maven cache (resolved on first use), never from Ivy at job
    start, so a job starts without network access to a package repository.
    """
    jars = ",".join(str(j) for j in spark_connector_jars(cfg.stack.cache_dir))
    # A URI as given (hdfs://, s3a://: shared by every node), a local path made absolute.
    checkpoint = storage.absolute(cfg.spark.checkpoint_dir)
    # Executors must run the same interpreter (and so the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(f"{cfg.spark.app_name}-{role}")
        .config("spark.jars", jars)
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.default.parallelism", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # ALS with many iterations grows a deep lineage: a bigger thread stack avoids
        # StackOverflowError (checkpointing below cuts the lineage as well).
        .config("spark.driver.extraJavaOptions", "-Xss16m")
        .config("spark.executor.extraJavaOptions", "-Xss16m")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
        # Without Hadoop's native library every local file Hadoop creates forks `chmod` (and,
        # through FileContext, `readlink` several times): 60 ms per streaming checkpoint file
        # here, two files per micro-batch. The FileSystem-based manager (Spark's own, for file
        # systems without FileContext; a rename that never overwrites, as the offset and
        # commit logs ask) on the raw local file system (no .crc side files) takes 9 ms.
        .config(
            "spark.sql.streaming.checkpointFileManagerClass",
            "org.apache.spark.sql.execution.streaming.checkpointing."
            "FileSystemBasedCheckpointFileManager",
        )
        .config("spark.hadoop.fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem")
        # Python workers (and the driver's collect) talk to their JVM over Unix domain sockets
        # (Spark 4.1+) instead of loopback TCP, where a task's Arrow batches stalled ~40 ms
        # (the signature of Nagle's algorithm meeting delayed ACKs): a Python task over 500
        # rows spent 40 ms waiting for its input, 2-8 ms over a Unix socket. Each stream
        # micro-batch runs one.
        .config("spark.python.unix.domain.socket.enabled", "true")
    )
    # One BLAS thread per Python worker: Spark already runs one task per core, and OpenBLAS
    # threads spin-waiting on busy cores made the stream's per-user step 3x slower.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        builder = builder.config(f"spark.executorEnv.{variable}", "1")
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setCheckpointDir(checkpoint)
    spark.sparkContext.setLogLevel("WARN")
    return spark
