"""spark-submit entry script of the streaming job (docs/cluster.md):

    spark-submit [spark options] submit_stream.py --config streamrec.yaml [--available-now]
                 [--timeout S]

Runs exactly `streamrec --config streamrec.yaml stream ...`: the SparkSession the job builds
(streamrec/spark.py) is the one spark-submit started, so its master, jars and executor Python
apply. Options after --config are those of `streamrec stream`. Exit status as the CLI's: 0 done,
2 a streamrec error (the message says what to fix).
"""

from __future__ import annotations

import sys

from streamrec.cli import submit_main

if __name__ == "__main__":
    sys.exit(submit_main("submit_stream.py", __doc__, ["stream"], sys.argv[1:]))
