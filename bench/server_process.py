"""A real `streamrec serve` process on a free port, for the benchmarks and the tests."""

import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamrec.errors import StackError
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import ENV_OVERRIDE_PREFIX, dump_config


class ServerProcess:
    """A real `streamrec serve` process on a free port, for tests and the benchmark
    (``threaded``: the baseline server, bench/threaded_server.py). Its config goes through a
    temporary YAML file; secrets only through the child's environment."""

    def __init__(
        self,
        cfg: Config,
        host: str = "127.0.0.1",
        timeout_s: float = 30.0,
        threaded: bool = False,
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="streamrec-serve-"))
        text, secrets = dump_config(cfg)
        config_file = self.folder / "config.yaml"
        config_file.write_text(text, "utf-8")
        self.log_file = self.folder / "serve.log"
        if threaded:
            command = ["-m", "streamrec.bench.threaded_server", "--config", str(config_file)]
        else:
            command = ["-m", "streamrec.cli", "--config", str(config_file), "serve"]
        # The child's environment: this one's, less what would override the config file.
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_OVERRIDE_PREFIX)}
        with self.log_file.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *command, "--host", host, "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**env, **secrets},
            )
        self.url = self._wait_for_address(timeout_s)

    def _wait_for_address(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            line = self.proc.stdout.readline().decode() if ready else ""
            if line.startswith("listening on "):
                return line.split()[-1]
        self.stop()
        raise StackError(
            f"`streamrec serve` did not start within {timeout_s:.0f}s: "
            f"{self.log_file.read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
