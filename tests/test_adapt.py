"""tinydiff.adapt: LoRA layers against their closed forms (zero start, merged == unmerged, parameter counts), the
adapter scale, freezing, and adapter files tied to their base checkpoint."""

import copy

import pytest
import torch
from torch import nn

from tinydiff import adapt
from tinydiff.checkpoint import save_checkpoint
from tinydiff.models import UNet

pytestmark = pytest.mark.usefixtures("one_thread")
TARGETS = ["*attn.qkv", "*attn.proj", "up.*.conv2"]


def small_unet(seed=0):
    torch.manual_seed(seed)
    net = UNet(channels=8, mults=(1, 2), num_classes=10)
    with torch.no_grad():  # non-zero output layer, so outputs depend on every weight
        net.conv_out.weight.normal_(0, 0.1)
    return net.eval()


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 16, 16, generator=g), torch.tensor([5, 300, 900]), torch.tensor([1, 7, 10])


def randomise_lora(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapt.lora_layers(model).values():
            layer.up.weight.copy_(0.1 * torch.randn(layer.up.weight.shape, generator=g))


def unmerge(model):
    """Each layer back to its kept base weight (what set_adapter_scale does to a merged layer before re-merging)."""
    for layer in adapt.lora_layers(model).values():
        layer.unmerge()


def test_zero_initialised_b_gives_exactly_the_base_output():
    base = small_unet()
    adapted = copy.deepcopy(base)
    names = adapt.add_lora(adapted, TARGETS, rank=4)
    assert names and all(isinstance(m, adapt._LoRA) for m in adapt.lora_layers(adapted).values())
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(adapted(x, t, y), base(x, t, y))


def test_merged_equals_unmerged_and_unmerge_restores_the_weights():
    model = small_unet()
    adapt.add_lora(model, TARGETS, rank=4, alpha=8)
    randomise_lora(model)
    x, t, y = inputs()
    before = {n: m.base.weight.clone() for n, m in adapt.lora_layers(model).items()}
    with torch.no_grad():
        unmerged = model(x, t, y)
        adapt.merge_lora(model)
        merged = model(x, t, y)
        unmerge(model)
        again = model(x, t, y)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, unmerged, atol=1e-6, rtol=1e-6)
    for name, layer in adapt.lora_layers(model).items():
        assert torch.equal(layer.base.weight, before[name]), name  # restored bit for bit, not by a subtraction


def test_conv_lora_is_the_convolution_of_its_merged_kernel():
    """B A for a convolution is a k x k convolution of rank r: the branch equals conv2d with delta_weight."""
    base = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    layer = adapt.LoRAConv2d(base, rank=2, alpha=4)
    with torch.no_grad():
        layer.up.weight.normal_()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        branch = layer(x) - base(x)
        direct = torch.nn.functional.conv2d(x, layer.delta_weight(), stride=2, padding=1)
    torch.testing.assert_close(branch, direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", [1, 4, 16])
def test_trainable_parameters_equal_the_closed_form(rank):
    linear = adapt.LoRALinear(nn.Linear(32, 48), rank)
    assert adapt.trainable_parameters(linear) == rank * (32 + 48)
    conv = adapt.LoRAConv2d(nn.Conv2d(8, 12, 3, padding=1), rank)
    assert adapt.trainable_parameters(conv) == rank * (8 * 3 * 3 + 12)
    model = small_unet()
    names = adapt.add_lora(model, TARGETS, rank=rank)
    adapt.freeze(model, adapt.LORA_PATTERNS)
    expected = 0
    for name in names:
        layer = model.get_submodule(name).base
        if isinstance(layer, nn.Linear):
            expected += rank * (layer.in_features + layer.out_features)
        else:
            expected += rank * (layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] + layer.out_channels)
    assert adapt.trainable_parameters(model) == expected


def test_only_adapter_parameters_receive_gradients():
    model = small_unet()
    adapt.add_lora(model, TARGETS, rank=2)
    adapt.freeze(model, adapt.LORA_PATTERNS)
    x, t, y = inputs()
    model(x, t, y).square().mean().backward()
    for name, p in model.named_parameters():
        is_adapter = name.endswith((".down.weight", ".up.weight"))
        assert (p.grad is not None) == is_adapter, name
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith(".up.weight"))


def test_adapter_scale_zero_is_the_base_and_merged_matches_unmerged_at_every_scale():
    base = small_unet()
    model = copy.deepcopy(base)
    adapt.add_lora(model, TARGETS, rank=4)
    randomise_lora(model)
    x, t, y = inputs()
    with torch.no_grad():
        adapt.set_adapter_scale(model, 0.0)
        assert torch.equal(model(x, t, y), base(x, t, y))
        adapt.set_adapter_scale(model, 1.0)
        adapt.merge_lora(model)
        adapt.set_adapter_scale(model, 0.0)  # merged at scale 0: the base weights exactly
        assert torch.equal(model(x, t, y), base(x, t, y))
        unmerge(model)
        for s in (0.5, 1.0, 1.7):
            adapt.set_adapter_scale(model, s)
            unmerged = model(x, t, y)
            adapt.merge_lora(model)
            torch.testing.assert_close(model(x, t, y), unmerged, atol=1e-5, rtol=1e-5)
            adapt.set_adapter_scale(model, s)  # setting the scale of a merged model re-merges at that scale
            torch.testing.assert_close(model(x, t, y), unmerged, atol=1e-5, rtol=1e-5)
            unmerge(model)
    # each layer's branch is linear in s (the network as a whole is not): at s = 1/2 a layer gives the average
    layer = adapt.LoRALinear(nn.Linear(6, 4), rank=2)
    with torch.no_grad():
        layer.up.weight.normal_()
        h = torch.randn(5, 6)
        full = layer(h)
        adapt.set_adapter_scale(layer, 0.5)
        torch.testing.assert_close(layer(h), 0.5 * (layer.base(h) + full), atol=1e-6, rtol=1e-6)


def test_adapter_files_round_trip_and_refuse_another_base(tmp_path):
    base = small_unet()
    save_checkpoint(tmp_path / "base", base, base.config)
    other = small_unet(seed=5)
    save_checkpoint(tmp_path / "other", other, other.config)
    model = copy.deepcopy(base)
    adapt.add_lora(model, TARGETS, rank=4)
    randomise_lora(model)
    weights = adapt.save_adapter(tmp_path / "style", model, tmp_path / "base", extra={"method": "lora"})
    assert weights.stat().st_size < 0.2 * (tmp_path / "base.safetensors").stat().st_size
    loaded = adapt.load_adapter(tmp_path / "style", copy.deepcopy(base), tmp_path / "base")
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
        half = adapt.load_adapter(tmp_path / "style", copy.deepcopy(base), tmp_path / "base", scale=0.0)
        assert torch.equal(half(x, t, y), base(x, t, y))
    with pytest.raises(ValueError, match="SHA-256") as err:
        adapt.load_adapter(tmp_path / "style", copy.deepcopy(other), tmp_path / "other")
    import json

    base_sha = json.loads((tmp_path / "base.json").read_text())["sha256"]
    other_sha = json.loads((tmp_path / "other.json").read_text())["sha256"]
    assert base_sha in str(err.value) and other_sha in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        adapt.load_adapter(tmp_path / "nope", copy.deepcopy(base), tmp_path / "base")


def test_bad_input_gets_clear_errors():
    model = small_unet()
    for rank in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="rank must be a positive int"):
            adapt.add_lora(model, TARGETS, rank=rank)
    with pytest.raises(ValueError, match="matches no nn.Linear or nn.Conv2d"):
        adapt.add_lora(model, ["*attention.query"], rank=2)
    with pytest.raises(ValueError, match="list of layer-name patterns"):
        adapt.add_lora(model, "*attn.qkv", rank=2)
    adapt.add_lora(model, TARGETS, rank=2)
    for scale in ("1", float("nan"), None):
        with pytest.raises(ValueError, match="adapter scale must be a finite number"):
            adapt.set_adapter_scale(model, scale)
    with pytest.raises(ValueError, match="no LoRA layers and no new labels"):
        adapt.save_adapter("unused", small_unet(), "unused")


def test_a_new_label_changes_no_base_parameter_and_no_other_row_after_training():
    """Trained with the real loop and optimizer, weight decay on: only the new row moves, bit for bit."""
    from tinydiff import schedules
    from tinydiff.guidance import classifier_free
    from tinydiff.train import train

    net = small_unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    label = adapt.add_label(net, init_from=3)
    assert label == 11 and net.extra_labels == 1 and net.label_emb.new.shape == (1, net.label_emb.base.embedding_dim)
    assert torch.equal(net.label_emb.new[0], before["label_emb.weight"][3])
    assert adapt.freeze(net, adapt.NEW_LABEL_PATTERNS) == net.label_emb.base.embedding_dim
    images = torch.rand(16, 1, 16, 16) * 2 - 1
    for _ in train(net.train(), schedules.cosine(100), images, labels=torch.full((16,), label), steps=3, batch_size=4,
                   lr=1e-2, weight_decay=0.1, progress=False):
        pass
    after = net.state_dict()
    assert torch.equal(after["label_emb.base.weight"], before["label_emb.weight"])  # every old row, the null row too
    for key, value in before.items():
        if key != "label_emb.weight":
            assert torch.equal(after[key], value), key
    assert not torch.equal(net.label_emb.new[0], before["label_emb.weight"][3])  # the new row learned
    # old labels give exactly the old embedding; the guidance wrappers accept the new label
    y_old = torch.tensor([0, 9, 10])
    assert torch.equal(net.label_emb(y_old), before["label_emb.weight"][y_old])
    x, t, _ = inputs()
    with torch.no_grad():
        out = classifier_free(net.eval(), torch.tensor([label, 2, label]), 2.0)(x, t)
    assert out.shape == x.shape
    second = adapt.add_label(net)
    assert second == 12 and net.label_emb.new.shape[0] == 2
    with pytest.raises(ValueError, match="added labels 11..12"):
        classifier_free(net, torch.tensor([13]), 2.0)
    with pytest.raises(ValueError, match="class-conditional"):
        adapt.add_label(UNet(channels=8, mults=(1, 2)))


def test_a_new_label_travels_in_an_adapter_file(tmp_path):
    base = small_unet()
    save_checkpoint(tmp_path / "base", base, base.config)
    model = copy.deepcopy(base)
    label = adapt.add_label(model)
    with torch.no_grad():
        model.label_emb.new.normal_()
    adapt.save_adapter(tmp_path / "label", model, tmp_path / "base")
    loaded = adapt.load_adapter(tmp_path / "label", copy.deepcopy(base), tmp_path / "base")
    x, t, _ = inputs()
    y = torch.tensor([label, 1, label])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
    assert (tmp_path / "label.safetensors").stat().st_size < 2_000  # one row of the embedding


@pytest.mark.parametrize("method", ["full", "partial", "lora", "label", "replay"])
def test_adapt_script_runs_each_method_and_trains_only_what_it_says(method, tmp_path, monkeypatch, load_script):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    base = small_unet()
    save_checkpoint(tmp_path / "base", base, base.config, extra={"schedule": {"name": "cosine", "T": 100},
                                                                 "train": {"prediction": "v"}, "recommended_guidance": 1.5})
    script = load_script("adapt")
    monkeypatch.chdir(root)  # the shipped digits live in data/
    out = tmp_path / method
    script.main(["--checkpoint", str(tmp_path / "base"), "--method", method, "--steps", "2", "--batch-size", "4",
                 "--n-train", "4", "--n-prior", "9", "--out", str(out)])
    header = json.loads(out.with_suffix(".json").read_text())
    extra = header["extra"]
    assert header["base_sha256"] == json.loads((tmp_path / "base.json").read_text())["sha256"]
    total = sum(p.numel() for p in base.parameters())
    if method in ("full", "replay"):
        assert extra["trainable_parameters"] == total
    elif method == "label":
        assert extra["trainable_parameters"] == base.label_emb.embedding_dim and extra["label"] == 11
    else:
        assert 0 < extra["trainable_parameters"] < total
    if method in ("lora", "label"):  # an adapter file loads back onto the base
        adapt.load_adapter(out, copy.deepcopy(base), tmp_path / "base")


def test_prepare_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="unknown adaptation method 'lora4'"):
        adapt.prepare(small_unet(), "lora4")
