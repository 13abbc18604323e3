"""The README's API example runs as written (in a scratch directory) and gives sensible landmark metrics;
its table of contents names every registered head family and loss term."""

from pathlib import Path

import polars as pl

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = README.read_text(encoding="utf-8").split("## Fifteen lines on real data", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_readme_example_runs(tmp_path, monkeypatch):
    code = _example()
    assert len(code.strip().splitlines()) <= 16
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    table = namespace["table"]
    assert isinstance(table, pl.DataFrame) and table.height == 6
    assert table["c_index"].drop_nulls().mean() > 0.7  # PBC's labs carry strong signal
    assert (tmp_path / "pbc-model" / "manifest.json").exists()


def test_readme_names_every_registered_head_and_loss_term():
    from ehrseq.losses import TERMS
    from ehrseq.models.families import FAMILIES

    inside = README.read_text(encoding="utf-8").split("## What is inside", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in [*FAMILIES, *TERMS] if f"`{name}`" not in inside]
    assert missing == []


def test_the_documented_model_toml_names_every_registered_head():
    from ehrseq.models.families import FAMILIES

    text = (README.parent / "data_specs" / "model.toml").read_text(encoding="utf-8")
    head = text.split("\nhead = ", 1)[1].split("\nloss = ", 1)[0]
    named = {name.strip() for line in head.splitlines() for name in line.split("#", 1)[-1].split(",")} - {""}
    assert named == set(FAMILIES)
