"""Checkpoints: safetensors + JSON round trips, clear errors for broken or mismatched files, exact resume."""

import json
import struct

import pytest
import torch

from tinydiff import schedules
from tinydiff.checkpoint import load_checkpoint, read_config, save_checkpoint
from tinydiff.models import UNet
from tinydiff.train import train
from tinydiff.train_state import load_training_state, save_training_state


def _model(**kw):
    torch.manual_seed(0)
    model = UNet(channels=8, mults=(1, 2), num_classes=10, **kw)
    with torch.no_grad():  # non-zero output layer, so a wrong load would change outputs
        model.conv_out.weight.normal_(0, 0.1)
    return model


def test_round_trip(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path / "unet", model, extra={"seed": 3, "note": "hi"})
    assert path.name == "unet.safetensors" and (tmp_path / "unet.json").is_file()
    # The weights file is a safetensors file (8-byte header length, then a JSON header), not a pickle.
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8 : 8 + n])["conv_in.weight"]["shape"] == [8, 1, 3, 3]
    loaded = load_checkpoint(tmp_path / "unet.safetensors")
    assert isinstance(loaded, UNet) and not loaded.training and loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 500]), torch.tensor([3, 10])
    model.eval()
    assert torch.equal(model(x, t, y), loaded(x, t, y))
    header = read_config(tmp_path / "unet")
    assert header["extra"] == {"seed": 3, "note": "hi"} and header["model"] == "UNet"


def test_truncated_file_gives_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "unet", _model())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated, corrupt"):
        load_checkpoint(path)
    # Even without the checksum, safetensors' own size check is turned into a clear message.
    sidecar = tmp_path / "unet.json"
    header = json.loads(sidecar.read_text())
    del header["sha256"]
    sidecar.write_text(json.dumps(header))
    with pytest.raises(ValueError, match="not a readable safetensors file.*truncated or corrupt"):
        load_checkpoint(path)


def test_flipped_byte_is_caught_by_the_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "unet", _model())
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        load_checkpoint(path)


def test_mismatched_model_lists_what_does_not_fit(tmp_path):
    save_checkpoint(tmp_path / "unet", _model())
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "unet", model=UNet(channels=16, mults=(1, 2)))
    text = str(err.value)
    assert "not in the model: label_emb.weight" in text
    assert "wrong shape: conv_in.weight: checkpoint [8, 1, 3, 3] vs model [16, 1, 3, 3]" in text
    with pytest.raises(ValueError, match="missing from the checkpoint: .*mid_attn"):
        model = UNet(channels=8, mults=(1, 2), num_classes=10)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("mid_attn")}
        from tinydiff.checkpoint import load_state_strict

        load_state_strict(model, state)


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="unet.json"):
        load_checkpoint(tmp_path / "unet")
    save_checkpoint(tmp_path / "unet", _model())
    sidecar = tmp_path / "unet.json"
    header = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(header | {"model": "os.system"}))
    with pytest.raises(ValueError, match="unknown model class"):
        load_checkpoint(tmp_path / "unet")
    sidecar.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tmp_path / "unet")


def test_config_must_be_json(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "unet", _model(), extra={"bad": object()})
    assert not (tmp_path / "unet.safetensors").exists()


def _run(model, steps, resume=None):
    g = torch.Generator().manual_seed(5)
    data = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    labels = torch.arange(64) % 10
    state = None
    for state in train(model, schedules.cosine(100), data, labels=labels, p_uncond=0.2, steps=steps, batch_size=8,
                       lr=1e-3, ema_decay=0.99, generator=g, resume=resume, progress=False):
        pass
    return state


def test_resume_from_disk_continues_the_same_run(tmp_path):
    straight = _run(_model(), 6)
    half = _run(_model(), 3)
    save_training_state(tmp_path / "state", half)
    loaded = load_training_state(tmp_path / "state")
    assert loaded.step == 3 and loaded.ema is not None
    resumed = _run(loaded.model, 6, resume=loaded)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="training state"):
        load_training_state(save_checkpoint(tmp_path / "weights", _model()))


def test_update_extra_keeps_the_weights(tmp_path):
    from tinydiff.checkpoint import update_extra

    model = _model()
    save_checkpoint(tmp_path / "unet", model, extra={"seed": 1})
    before = read_config(tmp_path / "unet")
    update_extra(tmp_path / "unet", eval={"fd": 0.5})
    after = read_config(tmp_path / "unet")
    assert after["extra"] == {"seed": 1, "eval": {"fd": 0.5}} and after["sha256"] == before["sha256"]
    loaded = load_checkpoint(tmp_path / "unet")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
