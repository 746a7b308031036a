"""Resolve jars from Maven Central into the git-ignored cache, once per pom content.

The broker's classpath and the Spark Kafka connector are plain Maven dependency sets described
by the poms under ``stack/maven/``. A resolved set lives in ``<cache>/maven/<name>-<pom hash>/``
with a ``.complete`` marker written last, so an interrupted download is redone, not trusted.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from streamrec.errors import ServiceUnavailable

log = logging.getLogger(__name__)

KAFKA_BROKER = "kafka-broker"
SPARK_KAFKA_CONNECTOR = "spark-kafka-connector"


def pom_path(name: str) -> Path:
    # Beside this module, in the source tree and in the installed package alike.
    return Path(__file__).parent / "poms" / name / "pom.xml"


def resolve(name: str, cache_dir: str | Path) -> Path:
    """The folder holding the jars of pom ``name``, downloading them with Maven if needed."""
    pom = pom_path(name)
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    target = Path(cache_dir).resolve() / "maven" / f"{name}-{digest}"
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceUnavailable(
            "Maven (mvn) is not installed; it resolves the Kafka and Spark connector jars. "
            "Install it with `apt-get install maven`."
        )
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    log.info("resolving %s jars with Maven into %s", name, target)
    # Maven's own download cache lives in the git-ignored cache too, not in ~/.m2.
    local_repo = Path(cache_dir).resolve() / "m2"
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dmaven.repo.local={local_repo}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={target}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceUnavailable(
            f"Maven could not resolve {pom} (exit {proc.returncode}); "
            f"is Maven Central reachable?\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    marker.write_text(digest)
    return target


def _artifact_name(jar: Path) -> str:
    """'lz4-java-1.10.1.jar' -> 'lz4-java': the name without its version."""
    parts = jar.stem.split("-")
    keep = []
    for part in parts:
        if part[:1].isdigit():
            break
        keep.append(part)
    return "-".join(keep)


def spark_connector_jars(cache_dir: str | Path) -> list[Path]:
    """The connector jars to add to Spark, minus artifacts pyspark already ships (two versions of
    one library on a classpath break at run time)."""
    import pyspark

    shipped = {_artifact_name(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    folder = resolve(SPARK_KAFKA_CONNECTOR, cache_dir)
    return sorted(j for j in folder.glob("*.jar") if _artifact_name(j) not in shipped)
