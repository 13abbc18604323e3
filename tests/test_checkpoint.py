"""Model directories: round trip, atomicity and refusal of tampered or incompatible files."""

import json

import pytest
import torch

from ehrseq.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from ehrseq.errors import CheckpointError


@pytest.fixture
def saved(tmp_path):
    state = {"encoder.weight": torch.randn(3, 4), "head.bias": torch.arange(5.0)}
    docs = {"config": {"encoder": "gru", "hidden": 16}, "features": {"numeric": ["bili"]}}
    return save_checkpoint(tmp_path / "model", state, docs), state, docs


def test_round_trip_restores_tensors_and_documents(saved):
    path, state, docs = saved
    loaded = load_checkpoint(path)
    assert loaded.documents == docs
    assert loaded.state_dict.keys() == state.keys()
    for key in state:
        assert torch.equal(loaded.state_dict[key], state[key])
    assert loaded.manifest["format_version"] == FORMAT_VERSION
    assert not any(p.name.endswith(".pkl") or p.name.endswith(".pt") for p in path.iterdir())


def test_refuses_to_overwrite_unless_asked(saved):
    path, state, docs = saved
    with pytest.raises(FileExistsError):
        save_checkpoint(path, state, docs)
    save_checkpoint(path, {"x": torch.zeros(1)}, {"config": {}}, overwrite=True)
    assert set(load_checkpoint(path).state_dict) == {"x"}
    assert [p.name for p in path.parent.iterdir()] == ["model"]  # no staging or backup left behind


def test_modified_document_is_refused_by_checksum(saved):
    path, _, _ = saved
    config = path / "config.json"
    config.write_text(config.read_text().replace("gru", "lstm"))
    with pytest.raises(CheckpointError, match="config.json.*checksum"):
        load_checkpoint(path)


def test_modified_weights_are_refused(saved):
    path, _, _ = saved
    raw = bytearray((path / "weights.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (path / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        load_checkpoint(path)


def test_missing_and_extra_files_are_named(saved):
    path, _, _ = saved
    (path / "features.json").unlink()
    with pytest.raises(CheckpointError, match="missing features.json"):
        load_checkpoint(path)


def test_extra_file_is_refused(saved):
    path, _, _ = saved
    (path / "model.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="model.pkl"):
        load_checkpoint(path)


def test_newer_format_version_is_refused_with_upgrade_hint(saved):
    path, _, _ = saved
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="upgrade ehrseq"):
        load_checkpoint(path)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="manifest.json"):
        load_checkpoint(tmp_path / "empty")


def test_interrupted_save_leaves_nothing(tmp_path):
    class Boom(dict):
        def items(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "model", {"x": torch.zeros(1)}, Boom(config={}))
    assert list(tmp_path.iterdir()) == []


def test_tied_weights_are_saved():
    shared = torch.randn(2, 2)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = save_checkpoint(f"{d}/m", {"a": shared, "b": shared}, {"config": {}})
        loaded = load_checkpoint(path).state_dict
        assert torch.equal(loaded["a"], loaded["b"])
