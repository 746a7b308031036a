"""deploy/submit_*.py: spark-submit's application files run the CLI with their own options."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("script", ["submit_stream.py", "submit_batch.py"])
def test_submit_script_needs_a_config(script: str, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [script])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(DEPLOY / script), run_name="__main__")
    assert exit_.value.code == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["submit_stream.py", "submit_batch.py"])
def test_submit_script_names_the_executors_python_and_reports_a_bad_config(
    script: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    bad = tmp_path / "streamrec.yaml"
    bad.write_text("kafka:\n  no_such_key: 1\n")
    monkeypatch.setenv("PYSPARK_PYTHON", "./environment/bin/python")
    monkeypatch.setattr(sys, "argv", [script, "--config", str(bad)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(DEPLOY / script), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    name = script.removesuffix(".py")
    assert f"{name}: executors' Python: ./environment/bin/python" in err
    assert "no_such_key" in err and str(bad) in err
