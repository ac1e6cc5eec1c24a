"""Personalisation (Part 14, notebook 16): DreamBooth's prior-preservation loss against its closed form, the
hypernetwork's identity start, what each method trains, and the files it leaves."""

import pytest
import torch

from tinydiff import personalise as P
from tinydiff import schedules
from tinydiff.checkpoint import save_checkpoint
from tinydiff.data import captions as C
from tinydiff.models import UNet
from tinydiff.models.clip import TextEncoder
from tinydiff.models.text_unet import text_unet_from


def small_text_unet(tok):
    torch.manual_seed(0)
    base = UNet(in_channels=4, channels=8, mults=[1, 2], n_res=1, num_classes=10).eval()
    for p in base.parameters():  # a "trained" network: zero-initialised output layers would hide everything
        torch.nn.init.normal_(p, std=0.05)
    model = text_unet_from(base, TextEncoder(len(tok), tok.max_length, width=16, layers=1, heads=4)).eval()
    with torch.no_grad():  # a trained model reads the prompt: its cross-attention outputs are not zero
        for block in model.cross_attention_blocks():
            for p in block.parameters():
                p.normal_(std=0.05)
    return model


@pytest.fixture()
def tok():
    return C.tokenizer()


def test_prior_preservation_equals_its_closed_form_on_a_hand_built_batch():
    schedule = schedules.linear(T=100)
    ab = schedule.alpha_bars
    g = torch.Generator().manual_seed(0)
    x, prior = torch.randn(2, 1, 2, 2, generator=g), torch.randn(3, 1, 2, 2, generator=g)
    y = torch.tensor([[5, 1], [6, 1]])                       # the subject's "prompts"
    prior_ids = torch.tensor([[2, 1], [3, 1], [4, 1]])       # one per prior image
    t, t_prior = torch.tensor([10, 90]), torch.tensor([50, 0])
    eps, eps_prior = torch.randn(2, 1, 2, 2, generator=g), torch.randn(2, 1, 2, 2, generator=g)
    pick = torch.tensor([2, 0])

    def model(x_t, t, y):  # output = (first id) * x_t: the prompt decides what the model says
        return y[:, 0].float()[:, None, None, None] * x_t

    objective = P.PriorPreservation(schedule, prior, prior_ids, weight=0.5, prediction="epsilon")
    loss, parts = objective.loss(model, x, (t, t_prior, eps, eps_prior, pick), y=y)

    def term(x0, tt, e, first_id):  # || c * x_t - eps ||^2, mean over the pixels, written out
        a = ab[tt].float()
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * e
        return ((first_id * x_t - e) ** 2).mean()

    subject = (term(x[0], 10, eps[0], 5) + term(x[1], 90, eps[1], 6)) / 2
    prior_term = (term(prior[2], 50, eps_prior[0], 4) + term(prior[0], 0, eps_prior[1], 2)) / 2
    torch.testing.assert_close(parts["subject"], subject)
    torch.testing.assert_close(parts["prior"], prior_term)
    torch.testing.assert_close(loss, subject + 0.5 * prior_term)
    # the draws: one prior image per subject image, each its own t and eps, [B, ...] for a rank's slice
    draws = objective.draw(x, torch.Generator().manual_seed(1))
    assert [d.shape[0] for d in draws] == [2] * 5 and int(draws[4].max()) < 3
    with pytest.raises(ValueError, match="one prompt per image"):
        P.PriorPreservation(schedule, prior, prior_ids[:2])


def test_the_hypernetwork_starts_as_the_base_model_exactly_and_trains_alone(tok):
    model = small_text_unet(tok)
    x, t, ids = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), tok.encode(["a bold seven", "a three"])
    with torch.no_grad():
        before = model(x, t, ids)
    grown = P.prepare(model, tok, "hypernetwork")
    with torch.no_grad():
        assert torch.equal(model(x, t, ids), before)  # zero-initialised last layers: f = 0
    trainable = [n for n, q in model.named_parameters() if q.requires_grad]
    assert trainable and all(".kv.key." in n or ".kv.value." in n for n in trainable)
    blocks = len(model.cross_attention_blocks())
    assert sum(q.numel() for q in model.parameters() if q.requires_grad) == blocks * 2 * (16 * 32 + 32 + 32 * 16 + 16)
    with torch.no_grad():
        for n, q in model.named_parameters():
            if q.requires_grad:
                q.normal_(std=0.1)
        assert not torch.allclose(model(x, t, grown.encode(["a bold seven", "a three"])), before)


@pytest.mark.parametrize("method", P.METHODS)
def test_each_method_trains_what_it_says(tok, method):
    model = small_text_unet(tok)
    unet = sum(q.numel() for q in model.unet.parameters())
    encoder = sum(q.numel() for q in model.text_encoder.parameters())
    grown = P.prepare(model, tok, method)
    assert grown.vocabulary[-1] == P.new_word(method) and len(grown) == len(tok) + 1
    n = sum(q.numel() for q in model.parameters() if q.requires_grad)
    expected = {"textual_inversion": 16, "dreambooth": unet, "dreambooth_text": unet + encoder + 16}
    if method in expected:
        assert n == expected[method]
    elif method == "lora":
        names = [name for name, q in model.named_parameters() if q.requires_grad]
        assert names and all(name.endswith((".down.weight", ".up.weight")) and "_text" in name for name in names)
    row = model.text_encoder.token.new[-1]
    assert row.requires_grad == (method in ("textual_inversion", "dreambooth_text"))


def test_a_personalisation_file_round_trips_and_refuses_another_base(tok, tmp_path):
    base_path = tmp_path / "base"
    model = small_text_unet(tok)
    save_checkpoint(base_path, model)
    grown = P.prepare(model, tok, "lora", rank=2)
    with torch.no_grad():
        for q in model.parameters():
            if q.requires_grad:
                q.normal_(std=0.1)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    ids = grown.encode(["a sks three", "a bold seven"])
    with torch.no_grad():
        want = model(x, t, ids)
    P.save_personalisation(tmp_path / "lora", model, grown, "lora", base_path, rank=2)
    fresh = small_text_unet(tok)
    loaded = P.load_personalisation(tmp_path / "lora", fresh, tok, base_path)
    assert loaded.vocabulary == grown.vocabulary
    with torch.no_grad():
        assert torch.equal(fresh(x, t, ids), want)
    other = tmp_path / "other"
    different = small_text_unet(tok)
    with torch.no_grad():
        different.unet.conv_in.weight.add_(1.0)  # other weights, another hash
    save_checkpoint(other, different)
    with pytest.raises(ValueError, match="SHA-256"):
        P.load_personalisation(tmp_path / "lora", small_text_unet(tok), tok, other)
    with pytest.raises(ValueError, match="unknown personalisation method"):
        P.prepare(small_text_unet(tok), tok, "dream_booth")


def test_the_subject_is_hollow_threes():
    x = P.subject_images(4)
    assert x.shape == (4, 1, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    prompts, stated = P.composition_prompts("hollow", per_prompt=1)
    assert len(prompts) == 27 and P.SUBJECT_DIGIT not in stated[:, 0].tolist()
    assert prompts[0] == "a hollow zero" and prompts[2] == "a hollow zero leaning right"
