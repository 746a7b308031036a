"""spark-submit entry script of the batch job (docs/cluster.md):

    spark-submit [spark options] submit_batch.py --config streamrec.yaml [--every DURATION]

Runs exactly `streamrec --config streamrec.yaml batch run ...`: train ALS on the event store,
save a model version, publish every user's list. The SparkSession the job builds
(streamrec/spark.py) is the one spark-submit started, so its master, jars and executor Python
apply. Exit status as the CLI's: 0 published, 3 trained but not promoted (worse than the
current model), 2 a streamrec error (the message says what to fix).
"""

from __future__ import annotations

import argparse
import os
import sys

from streamrec.cli import main


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="submit_batch.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="streamrec YAML config (on the driver)")
    args, job_options = parser.parse_known_args(argv)
    # spark-submit hands spark.pyspark.python to the driver as PYSPARK_PYTHON: say which
    # interpreter the executors were told to run (./environment/bin/python with the archive).
    print(f"submit_batch: executors' Python: {os.environ.get('PYSPARK_PYTHON', 'python3')}",
          file=sys.stderr, flush=True)  # fmt: skip
    return main(["--config", args.config, "batch", "run", *job_options])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
