"""The README's command-line section runs as written, line by line, in a scratch directory: CSV files of the
PBC data, validate, split, train with the documented data_specs/model.toml, evaluate against baselines,
score."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ehrseq.data import validate_predictions

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    """The shell commands of the README's "Command line" block (continuation lines joined)."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Command line", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands, current = [], ""
    for line in block.strip().splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        commands.append(current + line.strip())
        current = ""
    return commands


@pytest.mark.slow
def test_the_readme_command_line_section_runs_as_written(tmp_path):
    commands = _commands()
    assert [shlex.split(c)[:2] for c in commands][1:] == [
        ["ehrseq", "validate"], ["ehrseq", "split"], ["ehrseq", "train"], ["ehrseq", "evaluate"], ["ehrseq", "score"]]
    (tmp_path / "data_specs").mkdir()
    shutil.copy(ROOT / "data_specs" / "model.toml", tmp_path / "data_specs" / "model.toml")  # as in a checkout
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    outputs = []
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert "Traceback" not in done.stderr and "\r" not in done.stderr  # no progress bar written into a log
        outputs.append(done.stdout)
    assert "valid: 312 patients" in outputs[1]
    assert (tmp_path / "split" / "train_visits.csv").is_file() and (tmp_path / "split" / "test_outcomes.csv").is_file()
    assert (tmp_path / "model" / "manifest.json").is_file()
    evaluation = outputs[4]
    for model in ("ehrseq", "cox", "km"):
        assert f"│ {model} " in evaluation, model
    predictions = validate_predictions(pl.read_parquet(tmp_path / "predictions" / "test_visits.parquet"))
    tested = pl.read_csv(tmp_path / "split" / "test_outcomes.csv")
    assert set(predictions["patient_id"]) == set(tested["patient_id"]) and set(predictions["horizon"]) == {365.0, 1095.0}
