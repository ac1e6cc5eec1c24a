"""No hard-coded devices: run the core on "meta" tensors.

A meta tensor has a shape and dtype but no data. Mixing it with a tensor that was
created on the CPU by mistake raises, so these tests catch a hard-coded device
without needing a GPU.
"""

import os

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tinydiff import schedules
from tinydiff.diffusion import predict_eps, predict_x0, q_posterior, q_sample, q_step, training_target
from tinydiff.losses import diffusion_loss
from tinydiff.models.embeddings import TimeEmbedding, sinusoidal_embedding
from tinydiff.samplers import ddpm_sample

META = torch.device("meta")


@pytest.mark.parametrize("name", schedules.NAMES)
def test_forward_process_on_meta(name):
    s = schedules.get(name, T=50)
    x0 = torch.empty(4, 1, 8, 8, device=META)
    noise = torch.empty_like(x0)
    t = torch.empty(4, dtype=torch.long, device=META)
    for out in (
        q_sample(s, x0, t, noise),
        q_step(s, x0, t, noise),
        *q_posterior(s, x0, x0, t),
        predict_x0(s, x0, t, noise, "v"),
        predict_eps(s, x0, t, noise, "x0"),
        training_target(s, x0, noise, t, "v"),
    ):
        assert out.device == META


def test_cpu_tensor_mixed_into_meta_raises():
    """The premise of this file: a stray CPU tensor in a meta computation is an error."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.ones(3) + torch.empty(3, device=META)


class _TinyEps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.time = TimeEmbedding(16, freq_dim=8)
        self.net = nn.Linear(2 + 16, 2)

    def forward(self, x, t):
        return self.net(torch.cat([x, self.time(t)], dim=1))


def test_embedding_loss_and_sampler_on_meta():
    s = schedules.get("cosine", T=20)
    model = _TinyEps().to(META)
    assert sinusoidal_embedding(torch.empty(3, dtype=torch.long, device=META), 8).device == META
    loss = diffusion_loss(model, s, torch.empty(5, 2, device=META))
    assert loss.device == META
    x = ddpm_sample(model, s, (5, 2), progress=False)
    assert x.device == META


# ---- the rules of tensors.py, watched op by op ----------------------------------------------------------------
#
# On a CPU-only machine nothing crashes when a CPU generator fills a GPU tensor or a float64 tensor is made on the
# data's device: both are CPU. Run the same code on "meta" tensors (our stand-in accelerator) under a dispatch
# mode that records every operator call, and the two mistakes become visible:
#   * a random draw whose generator lives on another device than the tensor it fills (CUDA raises; MPS too);
#   * a float64 tensor on a device other than the CPU (MPS has no float64; on CUDA it is slow).

class AcceleratorRules(TorchDispatchMode):
    """Records each operator call that breaks one of the two rules (the list ``broken``)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = kwargs.get("generator")
        if generator is not None:
            tensors = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
            target = torch.device(kwargs["device"]) if kwargs.get("device") is not None else (
                tensors[0].device if tensors else torch.device("cpu"))
            if target.type != generator.device.type:
                self.broken.append(f"{func}: a {generator.device.type} generator draws on {target.type}")
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.device.type != "cpu":
                self.broken.append(f"{func}: float64 on {t.device.type}")
        return out


def test_the_rules_catch_a_generator_on_another_device_and_float64_off_the_cpu():
    g = torch.Generator().manual_seed(0)
    with AcceleratorRules() as rules:
        torch.rand(3, generator=g, device=META)
        torch.ones(2, device=META).double()
        torch.rand(3, generator=g)                       # fine: both on the CPU
        torch.ones(2, dtype=torch.float64)                # fine: float64 on the CPU
    assert len(rules.broken) == 2 and "cpu generator draws on meta" in rules.broken[0] and "float64 on meta" in rules.broken[1]


def _meta_net() -> nn.Module:
    return _TinyEps().to(META)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "heun", "dpm", "plms", "sde", "pc", "flow-euler", "flow-heun"])
def test_every_sampler_keeps_the_rules(kind):
    from tinydiff.registry import METHODS, SamplerSpec

    method = METHODS[kind]
    spec = SamplerSpec(kind, 20 if kind == "ddpm" else 4, method.spacing, 1.0 if kind == "ddpm" else 0.0)
    g = torch.Generator().manual_seed(0)  # a CPU generator, the model on another device
    with AcceleratorRules() as rules:
        try:
            x = spec(_meta_net(), schedules.cosine(20), (5, 2), generator=g, progress=False,
                     prediction="velocity" if method.flow else "epsilon")
            assert x.device == META
        except RuntimeError as error:  # the corrector's step size reads the score's norm: no numbers on meta
            assert kind == "pc" and "meta" in str(error), error
    assert not rules.broken, rules.broken


def test_flow_matching_distillation_and_the_likelihood_keep_the_rules():
    from tinydiff.flow import FlowMatching, flow_matching_loss
    from tinydiff.likelihood import ode_log_likelihood

    g = torch.Generator().manual_seed(0)
    x0 = torch.empty(5, 2, device=META)
    with AcceleratorRules() as rules:
        flow_matching_loss(_meta_net(), x0, generator=g)
        FlowMatching().draw(x0, g)
        diffusion_loss(_meta_net(), schedules.cosine(20), x0, generator=g)
    assert not rules.broken, rules.broken
    with AcceleratorRules() as rules:
        try:  # on meta the ODE cannot finish (its step sizes read numbers); what it made until then is checked
            ode_log_likelihood(_meta_net(), schedules.cosine(20), x0, steps=4, exact=False, generator=g, progress=False)
        except (NotImplementedError, RuntimeError):
            pass
    assert not rules.broken, rules.broken


def test_toy_data_and_the_mixture_oracle_keep_the_rules():
    from tinydiff.data.toy import anisotropic_mixture, checkerboard, spiral, swiss_roll, two_moons
    from tinydiff.oracle import MixtureEpsilon

    g = torch.Generator().manual_seed(0)
    oracle = MixtureEpsilon(anisotropic_mixture(), schedules.cosine(20))
    with AcceleratorRules() as rules:
        for make in (two_moons, swiss_roll, checkerboard, spiral):
            make(8, generator=g)
        anisotropic_mixture().sample_with_labels(8, generator=g)
        try:  # the oracle computes in float64 on the CPU and must hand back x's device and dtype
            oracle(torch.empty(4, 2, device=META), 3)
        except (NotImplementedError, RuntimeError):
            pass
    assert not rules.broken, rules.broken


# ---- the same paths on a real device: TINYDIFF_TEST_DEVICE=cuda (or mps), see `make test-device` ----------------

DEVICE = torch.device(os.environ.get("TINYDIFF_TEST_DEVICE", "cpu"))


@pytest.mark.parametrize("generator_on", ["cpu", "device"])
def test_samplers_flow_likelihood_and_captions_on_the_test_device(generator_on):
    """What runs on CPU runs unchanged on ``DEVICE``, with a generator on the CPU or on the device: every sampler,
    the flow-matching loss, the ODE likelihood, toy data and the caption measures (on CPU this is a smoke test)."""
    from tinydiff.data.captions import attributes, reference_ink, styled_digits
    from tinydiff.data.toy import anisotropic_mixture, two_moons
    from tinydiff.flow import flow_matching_loss
    from tinydiff.likelihood import ode_log_likelihood
    from tinydiff.oracle import MixtureEpsilon
    from tinydiff.registry import METHODS, SamplerSpec

    g = torch.Generator(device=DEVICE if generator_on == "device" else "cpu").manual_seed(0)
    net, schedule = _TinyEps().to(DEVICE), schedules.cosine(20)
    for kind, method in METHODS.items():
        spec = SamplerSpec(kind, 20 if kind == "ddpm" else 4, method.spacing, 1.0 if kind == "ddpm" else 0.0)
        x = spec(net, schedule, (5, 2), generator=g, progress=False, prediction="velocity" if method.flow else "epsilon")
        assert x.device.type == DEVICE.type and torch.isfinite(x).all(), kind
    x0 = two_moons(16, generator=g).to(DEVICE)
    assert torch.isfinite(flow_matching_loss(net, x0, generator=g))
    oracle = MixtureEpsilon(anisotropic_mixture(), schedule)
    assert oracle(x0[:4], 3).device.type == DEVICE.type
    ll = ode_log_likelihood(net, schedule, x0[:4], steps=4, exact=False, generator=g, progress=False)
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    images = torch.rand(20, 1, 16, 16, generator=g, device=g.device).to(DEVICE) * 2 - 1
    labels = (torch.arange(20) % 10).to(DEVICE)
    reference = reference_ink(images, labels)
    made, attrs = styled_digits(images, labels, reference, generator=g)
    assert made.device.type == DEVICE.type and attrs.shape == (20, 3)
    assert attributes(made, labels, reference).shape == (20, 3)


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA's sync debug mode: run with TINYDIFF_TEST_DEVICE=cuda")
def test_training_steps_between_two_reads_of_the_loss_never_wait_for_the_gpu():
    """The data and the generator on the CPU, the network on the GPU: the minibatch, the null-label dropout, t and eps
    are copied through pinned memory and the loss is read every log_every steps, so no step in between makes the host
    wait for the device (CUDA raises on any synchronising call in "error" mode)."""
    from tinydiff.models import UNet
    from tinydiff.train import train

    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), n_res=1, num_classes=3).to(DEVICE)
    images, labels = torch.randn(64, 1, 16, 16), torch.randint(0, 3, (64,))
    run = train(net, schedules.cosine(50), images, labels=labels, p_uncond=0.2, steps=8, batch_size=8, ema_decay=0.9,
                log_every=5, generator=torch.Generator().manual_seed(0), progress=False)
    next(run), next(run)  # the first steps allocate (the optimizer's moments, pinned staging buffers)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        states = [next(run), next(run)]  # steps 3 and 4: the loss is not read
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [s.step for s in states] == [3, 4] and torch.tensor([s.loss for s in states]).isfinite().all()
