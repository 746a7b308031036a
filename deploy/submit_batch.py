"""spark-submit entry script of the batch job (docs/cluster.md):

    spark-submit [spark options] submit_batch.py --config streamrec.yaml [--every DURATION]

Runs exactly `streamrec --config streamrec.yaml batch run ...`: train ALS on the event store,
save a model version, publish every user's list. The SparkSession the job builds
(streamrec/spark.py) is the one spark-submit started, so its master, jars and executor Python
apply. Exit status as the CLI's: 0 published, 3 trained but not promoted (worse than the
current model), 2 a streamrec error (the message says what to fix).
"""

from __future__ import annotations

import sys

from streamrec.cli import submit_main

if __name__ == "__main__":
    sys.exit(submit_main("submit_batch.py", __doc__, ["batch", "run"], sys.argv[1:]))
