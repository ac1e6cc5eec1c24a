"""scripts/sample.py, tinydiff.evaluation and SamplerSpec: digits from a checkpoint without a notebook."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tinydiff import schedules
from tinydiff.checkpoint import save_checkpoint
from tinydiff.evaluation import balanced_labels, sample_digits
from tinydiff.metrics import within_class_diversity
from tinydiff.models import UNet
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import METHODS, SamplerSpec
from tinydiff.samplers import ddim_sample
from tinydiff.solvers import dpm_solver_sample

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=10)
    with torch.no_grad():  # random, non-zero output layer: samples depend on the label and the noise
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, net, net.config, extra={"schedule": {"name": "cosine", "T": 50},
                                                  "train": {"prediction": "epsilon"}, "recommended_guidance": 2.0})
    return path


def test_sampler_spec_parses_the_names_scripts_take():
    assert SamplerSpec.parse("ddpm", 1000) == SamplerSpec("ddpm", 1000, "all", 1.0)
    assert SamplerSpec.parse("ddim:50", 1000) == SamplerSpec("ddim", 50, "leading", 0.0)
    assert SamplerSpec.parse("ddim:20:trailing:1", 1000).name == "DDIM-20 trailing eta=1"
    assert SamplerSpec.parse("ddim:50", 1000).with_eta(0.5).name == "DDIM-50 eta=0.5"
    assert SamplerSpec.parse("dpm:20", 1000) == SamplerSpec("dpm", 20, "trailing", 0.0)  # the solver's own default
    assert SamplerSpec.parse("dpm:20:trailing", 1000).name == "DPM-Solver++(2M)-20 trailing"
    assert SamplerSpec.parse("heun:10", 1000).network_calls == 19
    for bad, message in [("dpm", "unknown sampler"), ("rk4:20", "unknown sampler"), ("ddim", "unknown sampler"), ("ddim:0", "out of range"),
                         ("ddim:50:sideways", "unknown spacing"), ("ddim:50:leading:-1", "eta must be"),
                         ("ddpm:50", "unknown sampler")]:
        with pytest.raises(ValueError, match=message):
            SamplerSpec.parse(bad, 1000)


def test_each_method_accepts_exactly_the_steps_its_entry_says():
    """The registry's ``fewest_steps`` is what the function itself accepts: one step fewer raises, that many runs."""
    model, schedule = (lambda x, t: torch.zeros_like(x)), schedules.cosine(50)
    for name, method in METHODS.items():
        if name == "ddpm":
            continue
        kwargs = dict(prediction="velocity" if method.flow else "epsilon", progress=False)
        spec = SamplerSpec(name, method.fewest_steps, method.spacing)
        assert spec(model, schedule, (2, 2), **kwargs).shape == (2, 2), name
        if method.fewest_steps > 1:
            with pytest.raises(ValueError, match=f"needs steps >= {method.fewest_steps}"):
                SamplerSpec(name, method.fewest_steps - 1, method.spacing)(model, schedule, (2, 2), **kwargs)


def test_a_spec_runs_the_sampler_it_names():
    s = schedules.cosine(50)
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    direct = ddim_sample(model, s, (3, 2), steps=10, eta=0.0, x_T=x_T, progress=False)
    assert torch.equal(SamplerSpec.parse("ddim:10", 50)(model, s, (3, 2), x_T=x_T, progress=False), direct)
    dpm = dpm_solver_sample(model, s, (3, 2), steps=10, x_T=x_T, progress=False)
    assert torch.equal(SamplerSpec.parse("dpm:10", 50)(model, s, (3, 2), x_T=x_T, progress=False), dpm)


def test_within_class_diversity_closed_form():
    # class 0: three corners of a unit square (distances 1, 1, sqrt 2); class 1: two points 4 apart; class 2 alone
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [4.0, 0.0], [9.0, 9.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    assert within_class_diversity(f, y) == pytest.approx(((2 + 2**0.5) / 3 + 4.0) / 2)
    assert within_class_diversity(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1])) == 0.0
    with pytest.raises(ValueError, match="single sample"):
        within_class_diversity(f[:2], torch.tensor([0, 1]))


def test_load_diffusion_model_reads_schedule_and_guidance(tiny_checkpoint, tmp_path):
    m = load_diffusion_model(tiny_checkpoint)
    assert m.schedule.T == 50 and m.schedule.name == "cosine" and m.prediction == "epsilon" and m.recommended_guidance == 2.0
    save_checkpoint(tmp_path / "bare", m.net, m.net.config)
    with pytest.raises(ValueError, match="does not record the noise schedule"):
        load_diffusion_model(tmp_path / "bare")


def test_sample_digits_is_seeded_per_batch_and_cached(tiny_checkpoint, tmp_path):
    m = load_diffusion_model(tiny_checkpoint)
    m.extra["data_shape"] = [1, 16, 16]  # the tiny UNet takes 16 x 16 images too
    labels = balanced_labels(6)
    spec = SamplerSpec.parse("ddim:3", 50)
    a = sample_digits(m, labels, sampler=spec, guidance=2.0, batch_size=4, cache_dir=tmp_path,
                      progress=False)
    assert a.shape == (6, 1, 16, 16) and len(list(tmp_path.glob("*.safetensors"))) == 2
    b = sample_digits(m, labels, sampler=spec, guidance=2.0, batch_size=4, cache_dir=tmp_path,
                      progress=False)
    assert torch.equal(a, b)
    c = sample_digits(m, labels, sampler=spec, guidance=2.0, batch_size=4, progress=False)
    assert torch.equal(a, c)  # the cache returns what sampling would
    d = sample_digits(m, labels, sampler=spec, guidance=1.0, batch_size=4, progress=False)
    assert not torch.equal(a, d)  # the scale reaches the network


def test_sample_script_writes_grid_and_arrays(tiny_checkpoint, tmp_path, monkeypatch, load_script):
    script = load_script("sample")
    out = tmp_path / "digits"
    # the tiny UNet takes 16 x 16 inputs too; the script samples 32 x 32, which it also accepts
    script.main(["--checkpoint", str(tiny_checkpoint), "--n", "12", "--sampler", "ddim:2", "--out", str(out)])
    data = np.load(out.with_suffix(".npz"))
    assert data["samples"].shape == (12, 1, 32, 32) and data["samples"].dtype == np.float32
    assert data["samples"].min() >= -1 and data["samples"].max() <= 1
    assert data["labels"].tolist() == [i % 10 for i in range(12)]
    assert out.with_suffix(".png").stat().st_size > 0
    assert not out.with_suffix(".wav").exists() and not out.with_suffix(".gif").exists()  # images: no sound, no video
    script.main(["--checkpoint", str(tiny_checkpoint), "--n", "3", "--digit", "7", "--sampler", "ddim:2",
                 "--out", str(tmp_path / "sevens")])
    assert np.load(tmp_path / "sevens.npz")["labels"].tolist() == [7, 7, 7]


def _perturbed(net):
    """``net`` with every parameter nudged (seed 0): a random, non-zero output (and, in a VideoUNet, non-zero
    temporal layers), so samples depend on the label, the noise and the frame."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_sample_script_writes_a_wav_for_a_spoken_digit_model(tmp_path, capsys, load_script):
    """A spoken-digit checkpoint (notebook 17): the spectrograms go to the npz and PNG as images do, their sound by
    Griffin-Lim (seeded by --seed) to ``waveforms`` and to one 16-bit 8 kHz WAV, clips 0.25 s of silence apart,
    each peak-normalised to 0.9."""
    import wave

    from tinydiff.data.audio import CLIP_SAMPLES, SAMPLE_RATE, waveforms_from_images

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    net = _perturbed(UNet(in_channels=1, channels=8, mults=(1, 2), n_res=1, num_classes=10))
    path = tmp_path / "spoken"
    save_checkpoint(path, net, extra={"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "v"},
                                      "data_shape": [1, 64, 96], "data": {"name": "spoken_digits"}, "classes": names})
    out = tmp_path / "sound"
    load_script("sample").main(["--checkpoint", str(path), "--n", "3", "--sampler", "ddim:2", "--seed", "5",
                                "--out", str(out)])
    data = np.load(out.with_suffix(".npz"))
    assert data["samples"].shape == (3, 1, 64, 96) and data["labels"].tolist() == [0, 1, 2]
    assert data["waveforms"].shape == (3, CLIP_SAMPLES) and data["waveforms"].dtype == np.float32
    want = waveforms_from_images(torch.from_numpy(data["samples"]), generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(data["waveforms"], want.numpy(), atol=1e-6)  # Griffin-Lim's phases from --seed
    assert out.with_suffix(".png").stat().st_size > 0
    with wave.open(str(out.with_suffix(".wav")), "rb") as f:
        assert (f.getnchannels(), f.getframerate(), f.getsampwidth()) == (1, SAMPLE_RATE, 2)
        gap = SAMPLE_RATE // 4
        assert f.getnframes() == 3 * CLIP_SAMPLES + 2 * gap
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    for i in range(3):
        start = i * (CLIP_SAMPLES + gap)
        clip = pcm[start : start + CLIP_SAMPLES]
        assert abs(np.abs(clip).max() - 0.9 * 32767) <= 1  # peak-normalised: nothing clips
        if i:
            assert not pcm[start - gap : start].any()  # silence between clips
    said = capsys.readouterr().err
    assert "0.00 s  clip 0: zero" in said and "1.01 s  clip 1: one" in said and "2.02 s  clip 2: two" in said


def test_sample_script_writes_a_gif_for_a_video_model(tmp_path, load_script):
    """A VideoUNet checkpoint (moving digits, notebook 17) draws clips [N, T, 1, 32, 32]: the npz keeps them, the PNG
    has one row per clip, and the GIF has T frames, frame k showing every clip's k-th frame side by side."""
    from PIL import Image

    from tinydiff.models import VideoUNet

    net = _perturbed(VideoUNet(channels=8, mults=(1, 2), n_res=1, num_classes=10))
    path = tmp_path / "video"
    save_checkpoint(path, net, extra={"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "v"},
                                      "data_shape": [4, 1, 32, 32], "data": {"name": "moving_digits", "frames": 4}})
    out = tmp_path / "clips"
    script = load_script("sample")
    script.main(["--checkpoint", str(path), "--n", "3", "--sampler", "ddim:2", "--out", str(out)])
    samples = np.load(out.with_suffix(".npz"))["samples"]
    assert samples.shape == (3, 4, 1, 32, 32) and samples.dtype == np.float32
    assert Image.open(out.with_suffix(".png")).size == (4 * 33 + 1, 3 * 33 + 1)  # 3 rows of 4 frames
    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.n_frames == 4 and gif.size == (3 * 33 + 1, 33 + 1) and gif.info["loop"] == 0
        assert gif.info["duration"] in (120, 130)  # 125 ms asked; a GIF stores hundredths of a second
        for k in range(4):
            gif.seek(k)
            want = script.clip_frames(torch.from_numpy(samples))[k]
            assert np.array_equal(np.asarray(gif.convert("L")), want)  # frame k: every clip's k-th frame


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--digit", "10"], "--digit must be one of 0..9"),
        (["--sampler", "euler:5"], "unknown sampler"),
        (["--sampler", "ddpm", "--eta", "0.5"], "eta applies to ddim"),
        (["--guidance", "-2"], "--guidance must be >= 0"),
        (["--n", "0"], "--n must be at least 1"),
    ],
)
def test_sample_script_bad_arguments(tiny_checkpoint, tmp_path, argv, message, load_script):
    script = load_script("sample")
    with pytest.raises(SystemExit, match=message):
        script.main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "x"), *argv])


def test_sample_script_missing_checkpoint_says_so(tmp_path, load_script):
    script = load_script("sample")
    with pytest.raises((FileNotFoundError, ValueError), match="nope"):
        script.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])


def test_the_shipped_model_records_what_sampling_needs():
    m = load_diffusion_model(ROOT / "data" / "checkpoints" / "mnist_ddpm")
    assert m.prediction in ("epsilon", "x0", "v") and m.schedule.T == 1000
    assert m.net.null_class == 10 and m.recommended_guidance is not None and m.recommended_guidance >= 1.0
    for ev in m.extra["eval"].values():  # every stored evaluation names its sampler, size and result
        assert ev["n_samples"] >= 1000 and 0 <= ev["label_accuracy"] <= 1 and ev["fd"] > 0


def _tiny_net():
    torch.manual_seed(1)
    net = UNet(channels=8, mults=(1, 2), num_classes=10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_a_checkpoint_that_names_its_sampler_is_sampled_with_it(tmp_path, load_script):
    """A distilled student records ``extra.sampler``; --checkpoint alone must then run exactly that sampler."""
    from tinydiff.guidance import conditional

    net = _tiny_net()
    path = tmp_path / "student"
    save_checkpoint(path, net, net.config, extra={"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "v"},
                                                  "recommended_guidance": 1.0, "sampler": "ddim:2:trailing"})
    assert load_diffusion_model(path).sampler == "ddim:2:trailing"
    script = load_script("sample")
    script.main(["--checkpoint", str(path), "--n", "4", "--out", str(tmp_path / "s")])
    got = np.load(tmp_path / "s.npz")["samples"]
    labels = balanced_labels(4)
    want = ddim_sample(conditional(net.eval(), labels), schedules.cosine(50), (4, 1, 32, 32), steps=2, spacing="trailing",
                       prediction="v", clip_x0=1.0, generator=torch.Generator().manual_seed(0), progress=False)
    np.testing.assert_allclose(got, want.clamp(-1, 1).numpy(), atol=1e-5)  # channels-last in sample.py: float32 rounding


def test_a_flow_matching_checkpoint_samples_with_its_flow_sampler(tmp_path, load_script):
    from tinydiff.flow import flow_sample
    from tinydiff.guidance import conditional

    net = _tiny_net()
    path = tmp_path / "flow"
    save_checkpoint(path, net, net.config, extra={"train": {"objective": "flow matching"}, "sampler": "flow-heun:3",
                                                  "recommended_guidance": 1.0, "data_shape": [1, 32, 32]})
    m = load_diffusion_model(path)
    assert m.schedule is None and m.prediction == "velocity" and SamplerSpec.parse(m.sampler, 1000).network_calls == 6
    script = load_script("sample")
    script.main(["--checkpoint", str(path), "--n", "3", "--out", str(tmp_path / "f")])
    got = np.load(tmp_path / "f.npz")["samples"]
    want = flow_sample(conditional(net.eval(), balanced_labels(3)), (3, 1, 32, 32), steps=3, method="heun",
                       generator=torch.Generator().manual_seed(0), progress=False)
    np.testing.assert_allclose(got, want.clamp(-1, 1).numpy(), atol=1e-5)  # channels-last in sample.py: float32 rounding
    with pytest.raises(SystemExit, match="does not fit"):  # a diffusion sampler on a velocity model
        script.main(["--checkpoint", str(path), "--n", "1", "--sampler", "ddim:2", "--out", str(tmp_path / "g")])


def test_train_mnist_trains_a_flow_matching_model_that_sample_py_samples(tmp_path, monkeypatch, load_script):
    """A config with "objective": "flow matching" trains a velocity model; its JSON names a flow sampler, so
    scripts/sample.py --checkpoint alone samples it with that sampler."""
    import json
    import sys

    from tinydiff.checkpoint import read_config

    config = {
        "model": {"name": "UNet", "in_channels": 1, "channels": 8, "mults": [1, 2], "n_res": 1, "num_classes": 10,
                  "dropout": 0.0, "heads": 4},
        "train": {"steps": 2, "max_minutes": 0, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.0,
                  "ema_decay": 0.9, "grad_clip": 1.0, "p_uncond": 0.1, "objective": "flow matching",
                  "sampler": "flow-euler:2", "lr_schedule": "cosine"},
        "seed": 0,
        "output": str(tmp_path / "out" / "fm"),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    train_script = load_script("train_mnist")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train_mnist.py", "--config", str(tmp_path / "config.json"), "--device", "cpu"])
    train_script.main()
    extra = read_config(tmp_path / "out" / "fm")["extra"]
    assert extra["sampler"] == "flow-euler:2" and extra["schedule"] is None and extra["steps"] == 2
    m = load_diffusion_model(tmp_path / "out" / "fm")
    assert m.prediction == "velocity" and m.schedule is None
    load_script("sample").main(["--checkpoint", str(tmp_path / "out" / "fm"), "--n", "2", "--out", str(tmp_path / "s")])
    assert np.load(tmp_path / "s.npz")["samples"].shape == (2, 1, 32, 32)


def test_sample_script_applies_an_adapter_at_a_scale(tiny_checkpoint, tmp_path, load_script):
    from tinydiff import adapt

    m = load_diffusion_model(tiny_checkpoint)
    net = m.net
    adapt.add_lora(net, ["*attn.qkv", "up.*.conv2"], rank=2)
    with torch.no_grad():
        for layer in adapt.lora_layers(net).values():
            layer.up.weight.normal_(0, 0.5)
    adapt.save_adapter(tmp_path / "lora", net, tiny_checkpoint)
    script = load_script("sample")
    run = lambda out, *extra: script.main(["--checkpoint", str(tiny_checkpoint), "--n", "3", "--sampler", "ddim:2",
                                           "--out", str(tmp_path / out), *extra])
    run("base")
    run("zero", "--adapter", str(tmp_path / "lora"), "--adapter-scale", "0")
    run("full", "--adapter", str(tmp_path / "lora"))
    base, zero, full = (np.load(tmp_path / f"{n}.npz")["samples"] for n in ("base", "zero", "full"))
    assert np.array_equal(base, zero) and not np.allclose(base, full, atol=1e-4)
    with pytest.raises(SystemExit, match="--adapter"):
        run("x", "--adapter", str(tmp_path / "missing"))


def test_sample_script_takes_a_prompt_for_a_text_model(tmp_path, load_script):
    """A pixel TextUNet checkpoint with a tokenizer: --prompt replaces --digit, the npz keeps the prompts, and the
    samples are the classifier-free-guided DDIM of those prompt ids from the script's seed."""
    from tinydiff.data.captions import tokenizer
    from tinydiff.guidance import classifier_free
    from tinydiff.models import TextUNet

    tok = tokenizer()
    torch.manual_seed(0)
    net = TextUNet(unet=dict(in_channels=1, channels=8, mults=[1, 2]),
                   text_encoder=dict(vocab_size=len(tok), max_length=tok.max_length, width=16, layers=1, heads=4))
    with torch.no_grad():
        for p in net.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "text"
    save_checkpoint(path, net, extra={"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "epsilon"},
                                      "tokenizer": tok.config})
    script = load_script("sample")
    script.main(["--checkpoint", str(path), "--prompt", "a bold seven", "--n", "3", "--guidance", "2",
                 "--sampler", "ddim:2", "--out", str(tmp_path / "t")])
    data = np.load(tmp_path / "t.npz")
    assert data["prompts"].tolist() == ["a bold seven"] * 3 and "labels" not in data
    ids = tok.encode(["a bold seven"] * 3)
    want = SamplerSpec.parse("ddim:2", 50)(classifier_free(net.eval(), ids, 2.0), schedules.cosine(50), (3, 1, 32, 32),
                                           generator=torch.Generator().manual_seed(0), clip_x0=1.0, progress=False)
    # sample.py runs the network channels-last: the same sums in another order, equal to float32 rounding
    np.testing.assert_allclose(data["samples"], want.clamp(-1, 1).numpy(), atol=1e-5)
    for argv, message in [(["--prompt", "a purple seven"], "unknown word.*purple"), (["--digit", "7"], "reads prompts"),
                          ([], "reads prompts")]:
        with pytest.raises(SystemExit, match=message):
            script.main(["--checkpoint", str(path), "--out", str(tmp_path / "x"), *argv])
    labels = tmp_path / "labels"
    save_checkpoint(labels, _tiny_net(), extra={"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "epsilon"}})
    with pytest.raises(SystemExit, match="not text-conditioned"):
        script.main(["--checkpoint", str(labels), "--prompt", "a seven", "--out", str(tmp_path / "x")])
    # a personalisation (notebook 16): its new word reads in --prompt, and the samples are the adapted model's
    from tinydiff import personalise

    adapted = TextUNet(**net.config)
    adapted.load_state_dict(net.state_dict())
    words = personalise.prepare(adapted, tok, "textual_inversion")
    with torch.no_grad():
        adapted.text_encoder.token.new.normal_()
    personalise.save_personalisation(tmp_path / "word", adapted, words, "textual_inversion", path)
    script.main(["--checkpoint", str(path), "--personalisation", str(tmp_path / "word"), "--prompt", "a hollow seven",
                 "--n", "2", "--guidance", "2", "--sampler", "ddim:2", "--out", str(tmp_path / "w")])
    want = SamplerSpec.parse("ddim:2", 50)(classifier_free(adapted.eval(), words.encode(["a hollow seven"] * 2), 2.0),
                                           schedules.cosine(50), (2, 1, 32, 32), generator=torch.Generator().manual_seed(0),
                                           clip_x0=1.0, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "w.npz")["samples"], want.clamp(-1, 1).numpy(), atol=1e-5)
    with pytest.raises(SystemExit, match="--personalisation: .*SHA-256"):
        script.main(["--checkpoint", str(_other_text(tmp_path, tok)), "--personalisation", str(tmp_path / "word"),
                     "--prompt", "a hollow seven", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="needs a text-conditioned"):
        script.main(["--checkpoint", str(labels), "--personalisation", str(tmp_path / "word"), "--out", str(tmp_path / "x")])


def _other_text(tmp_path, tok):
    """Another text checkpoint (other weights, so another SHA-256) with the same tokenizer."""
    from tinydiff.models import TextUNet

    torch.manual_seed(1)
    net = TextUNet(unet=dict(in_channels=1, channels=8, mults=[1, 2]),
                   text_encoder=dict(vocab_size=len(tok), max_length=tok.max_length, width=16, layers=1, heads=4))
    path = tmp_path / "other_text"
    save_checkpoint(path, net, extra={"schedule": {"name": "cosine", "T": 50}, "train": {"prediction": "epsilon"},
                                      "tokenizer": tok.config})
    return path
