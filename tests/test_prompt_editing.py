"""Editing by prompt (notebook 16): the truncated schedule, prompt-to-prompt's attention sharing, and the inversion
round trip on the shipped text model."""

from pathlib import Path

import pytest
import torch

from tinydiff import prompt_editing as E
from tinydiff import schedules
from tinydiff.data import captions as C
from tinydiff.guidance import classifier_free
from tinydiff.pretrained import load_diffusion_model
from tinydiff.samplers import ddim_sample

CKPT = Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def test_a_prefix_of_a_schedule_keeps_its_levels():
    s = schedules.cosine(T=1000)
    head = E.prefix(s, 599)
    assert head.T == 600 and torch.equal(head.alpha_bars, s.alpha_bars[:600])
    assert E.level(s, 0.6) == 599 and E.level(s, 1.0) == 999
    with pytest.raises(ValueError, match="strength"):
        E.level(s, 0.0)


def test_attention_sharing_copies_the_source_rows_into_the_edited_rows():
    class Net(torch.nn.Module):
        null_class = torch.tensor([1, 0])

        def cross_attention_blocks(self):
            return []

    inject = E.AttentionInjection(Net(), n=2, until=0)
    w = torch.arange(8.0).reshape(8, 1, 1, 1)  # CFG layout: [src0, src1, tgt0, tgt1] for the prompt, then the null
    assert inject.share(w).flatten().tolist() == [0, 1, 0, 1, 4, 5, 4, 5]


@pytest.fixture(scope="module")
def shipped():
    base = load_diffusion_model(CKPT / "mnist_text")
    test = C.captioned_digits("test", copies=1, seed=1, hold_out=False)
    z0 = base.codec.encode(test.images[:6])
    ids = base.tokenizer.encode([C.caption(int(d)) for d in test.attributes[:6, 0]])
    return base, z0, ids


def test_inversion_at_guidance_1_returns_the_digit_and_at_guidance_3_does_not(shipped):
    base, z0, ids = shipped
    rms = {}
    for s in (1.0, 3.0):
        out = E.edit(base.net, base.schedule, z0, ids, ids, editor="inversion", strength=0.6, guidance=s,
                     prediction=base.prediction)
        rms[s] = float((out - z0).pow(2).mean().sqrt() / z0.pow(2).mean().sqrt())
    assert rms[1.0] < 0.05 < rms[3.0]  # measured: 0.018 and 0.125 of the latents' RMS (25 steps, t0 = 599)


def test_prompt_to_prompt_with_the_same_prompt_reproduces_the_source_exactly(shipped):
    base, z0, ids = shipped
    head = E.prefix(base.schedule, 599)
    injected = E.AttentionInjection(base.net, len(z0), until=300)
    both = ddim_sample(classifier_free(injected, torch.cat([ids, ids]), 3.0), head, (2 * len(z0), *z0.shape[1:]),
                       steps=25, spacing="trailing", x_T=torch.cat([z0, z0]), prediction=base.prediction, progress=False)
    assert torch.equal(both[len(z0):], both[: len(z0)])  # the edited branch is the source, bit for bit
    kw = dict(strength=0.6, guidance=3.0, prediction=base.prediction)
    p2p = E.edit(base.net, base.schedule, z0, ids, ids, editor="prompt_to_prompt", **kw)
    torch.testing.assert_close(p2p, E.edit(base.net, base.schedule, z0, ids, ids, editor="inversion", **kw))
    thin = base.tokenizer.encode([C.caption(d, 0) for d in range(6)])
    bold = base.tokenizer.encode([C.caption(d, 2) for d in range(6)])   # "a thin k" -> "a bold k": a word swapped
    swapped = E.edit(base.net, base.schedule, z0, thin, bold, editor="prompt_to_prompt", **kw)
    assert not torch.allclose(swapped, E.edit(base.net, base.schedule, z0, thin, thin, editor="prompt_to_prompt", **kw))
    with pytest.raises(ValueError, match="same number of words"):
        E.edit(base.net, base.schedule, z0, ids, bold, editor="prompt_to_prompt", **kw)   # "a k" -> "a bold k"
    for block in base.net.cross_attention_blocks():
        assert block.attention_edit is None  # the control is removed after sampling
