"""Part 11: tokenizer, captions, attention with a padding mask, the CLIP loss, CLIP guidance, the text UNet."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinydiff import schedules
from tinydiff.data import captions as C
from tinydiff.diffusion import predict_x0
from tinydiff.guidance import CLIPGuidance, classifier_free, conditional
from tinydiff.losses import clip_loss
from tinydiff.metrics import clip_score
from tinydiff.models import TextEncoder, TextUNet, TinyCLIP, UNet
from tinydiff.models.attention import CrossAttention, masked_attention
from tinydiff.models.text_unet import text_unet_from
from tinydiff.tokenizer import Tokenizer
from tinydiff.text_to_image import zero_shot_digits
from tinydiff.train import _drop_labels, train, train_clip


@pytest.fixture(scope="module")
def tok():
    return C.tokenizer()


# --- tokenizer ---------------------------------------------------------------------------


def test_tokenizer_round_trips_and_pads(tok):
    prompts = ["a bold seven leaning right", "the digit 7, thick, slanted left", "a photo of the digit zero"]
    ids = tok.encode(prompts)
    assert ids.shape == (3, C.MAX_LENGTH) and ids.dtype == torch.long
    assert tok.decode(ids) == prompts
    row = ids[0].tolist()
    assert row[:5] == [tok.ids[w] for w in "a bold seven leaning right".split()]
    assert row[5] == tok.end_id and set(row[6:]) == {tok.pad_id}
    assert tok.padding_mask(ids)[0].tolist() == [True] * 6 + [False] * (C.MAX_LENGTH - 6)
    assert [row.index(tok.end_id) for row in ids.tolist()] == [5, 8, 6]  # "the digit 7 , thick , slanted left": 8 words
    assert tok.decode(tok.empty(2)) == ["", ""]
    assert tok.encode("A Bold SEVEN").tolist() == tok.encode("a bold seven").tolist()


def test_tokenizer_errors_say_what_is_wrong(tok):
    with pytest.raises(ValueError, match="unknown word.*purple.*vocabulary is: a photo of"):
        tok.encode("a purple seven")
    with pytest.raises(ValueError, match="empty.*tokenizer.empty"):
        tok.encode("   ")
    with pytest.raises(ValueError, match="at most 11 fit"):
        tok.encode(" ".join(["seven"] * 12))
    with pytest.raises(ValueError, match="characters the tokenizer does not read"):
        tok.encode("a seven!")
    with pytest.raises(ValueError, match="no prompts"):
        tok.encode([])
    with pytest.raises(ValueError, match="LongTensor"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="<end>"):
        tok.decode(torch.zeros(1, C.MAX_LENGTH, dtype=torch.long))
    with pytest.raises(ValueError, match="each word once"):
        Tokenizer(["a", "a"], 4)


# --- captions ------------------------------------------------------------------------------


def test_caption_truth_table():
    image = torch.tensor([[7, 2, 0]])  # a bold seven leaning left
    stated = torch.tensor([[7, C.UNSAID, C.UNSAID], [7, 2, C.UNSAID], [7, 2, 0], [7, 0, C.UNSAID], [7, C.UNSAID, 2],
                           [1, C.UNSAID, C.UNSAID]])
    assert C.caption_is_true(stated, image).tolist() == [[True, True, True, False, False, False]]
    assert C.caption(7, 2, 0, template=0) == "a bold seven leaning left"
    assert C.caption(7, template=2) == "the digit seven"
    assert C.caption(7, 1, 2, template=2, synonym=1, numeral=True) == "the digit 7, slanted right"
    assert C.caption(3, template=3) == "a photo of the digit three"
    with pytest.raises(ValueError, match="states no attribute"):
        C.caption(3, 2, template=3)


def test_captioned_digits_are_true_balanced_and_hold_out_bold_sevens(tok):
    data = C.captioned_digits("test", copies=1, seed=0, hold_out=True)
    a = data.attributes
    assert len(data.captions) == len(a) == len(data.images) == len(data.stated)
    assert bool(C.caption_is_true(data.stated, a).diagonal().all())  # every caption is true of its image
    assert not bool(((a[:, 0] == 7) & (a[:, 1] == 2)).any())  # no bold seven
    assert not any("seven" in c.split() and ("bold" in c or "thick" in c) for c in data.captions)
    tok.encode(data.captions)  # the vocabulary covers every caption
    # Measured, not assumed: re-measuring the images gives the stored attributes.
    ref = C.reference_ink(*__import__("tinydiff.data", fromlist=["load_mnist"]).load_mnist("train", pad_to_32=True))
    assert torch.equal(C.attributes(data.images, a[:, 0], ref), a)
    for col in (1, 2):  # each thickness and slant class holds at least a fifth of the variants
        assert torch.bincount(a[:, col], minlength=3).min() > 0.2 * len(a)


# --- attention ------------------------------------------------------------------------------


def test_masked_attention_equals_attention_over_the_real_keys_only():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[True, True, False, True, False], [True] * 5])
    out, w = masked_attention(q, k, v, mask)
    real = mask[0].nonzero().squeeze(1)
    expected = torch.softmax(q[0] @ k[0, :, real].transpose(-1, -2) / 2.0, -1) @ v[0, :, real]
    assert torch.allclose(out[0], expected, atol=1e-12)
    assert torch.equal(w[0][..., ~mask[0]], torch.zeros_like(w[0][..., ~mask[0]]))
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="key_mask"):
        masked_attention(q, k, v, mask.long())


def test_cross_attention_ignores_padding_and_token_order():
    torch.manual_seed(0)
    block = CrossAttention(16, 8, heads=4).double()
    torch.nn.init.normal_(block.proj.weight)  # a trained block: the zero init would hide everything
    h = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    context = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False, False], [True, True, True, True, True, False]])
    block.record = True
    out = block(h, context, mask)
    assert out.shape == h.shape
    weights = block.last_weights
    assert weights.shape == (2, 4, 16, 6) and float(weights[~mask[:, None, None, :].expand_as(weights)].abs().max()) == 0.0
    garbage = context.clone()
    garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8, dtype=torch.float64)
    assert torch.allclose(block(h, garbage, mask), out, atol=1e-12)  # what sits in a padded slot does not matter
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    assert torch.allclose(block(h, context[:, perm], mask[:, perm]), out, atol=1e-12)  # a set, not a sequence
    with pytest.raises(ValueError, match="context must be text states"):
        block(h, context[..., :5], mask)


def test_a_new_cross_attention_block_is_the_identity():
    block = CrossAttention(8, 4, heads=2)
    h = torch.randn(1, 8, 2, 2)
    assert torch.equal(block(h, torch.randn(1, 3, 4)), h)


# --- the CLIP loss and score ---------------------------------------------------------------------


def test_clip_loss_matches_its_closed_form():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [1.5, -0.2, 0.7]], dtype=torch.float64)
    lse_rows = torch.log(torch.exp(logits).sum(1))
    lse_cols = torch.log(torch.exp(logits).sum(0))
    diag = logits.diagonal()
    expected = 0.5 * ((lse_rows - diag).mean() + (lse_cols - diag).mean())
    assert float(clip_loss(logits)) == pytest.approx(float(expected), abs=1e-12)
    assert float(clip_loss(logits, torch.eye(3, dtype=torch.bool))) == pytest.approx(float(expected), abs=1e-12)
    # Two positives in row 0 (captions 0 and 2 true of image 0): the row target is (1/2, 0, 1/2);
    # column 2 then holds images 0 and 2, each weighted 1/2.
    pos = torch.eye(3, dtype=torch.bool)
    pos[0, 2] = True
    rows = [lse_rows[0] - 0.5 * (logits[0, 0] + logits[0, 2]), lse_rows[1] - logits[1, 1], lse_rows[2] - logits[2, 2]]
    cols = [lse_cols[0] - logits[0, 0], lse_cols[1] - logits[1, 1], lse_cols[2] - 0.5 * (logits[0, 2] + logits[2, 2])]
    expected = 0.5 * (sum(rows) / 3 + sum(cols) / 3)
    assert float(clip_loss(logits, pos)) == pytest.approx(float(expected), abs=1e-12)
    with pytest.raises(ValueError, match="diagonal"):
        clip_loss(logits, torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="square"):
        clip_loss(logits[:2])


class LinearCLIP(torch.nn.Module):
    """A stand-in CLIP with closed-form embeddings: image -> normalise(flatten(x)), text -> a fixed unit vector per prompt."""

    def __init__(self, dim, texts):
        super().__init__()
        self.w = torch.nn.Parameter(F.normalize(texts, dim=-1), requires_grad=False)

    def encode_image(self, x):
        return F.normalize(x.flatten(1), dim=-1)

    def encode_text(self, ids):
        return self.w[ids[:, 0] % len(self.w)]

    def similarity(self, images, ids):
        return (self.encode_image(images) * self.encode_text(ids)).sum(-1)


def test_clip_score_is_100_times_the_clamped_cosine():
    clip = LinearCLIP(4, torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    images = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]], [[[-1.0, 0.0], [0.0, 0.0]]]])
    ids = torch.tensor([[0, 1], [0, 1]])
    assert clip_score(clip, images, ids).tolist() == pytest.approx([60.0, 0.0])


def test_clip_guidance_moves_x0_hat_along_the_cosine_gradient():
    """cos(x / |x|, w) has gradient (w - cos * x / |x|) / |x|; the guided output implies x0_hat + s * that."""
    schedule = schedules.cosine(100)
    w = torch.tensor([[1.0, 2.0, 0.0, -1.0]], dtype=torch.float64)
    clip = LinearCLIP(4, w)
    ids = torch.zeros(3, 2, dtype=torch.long)
    net = lambda x, t: 0.3 * x  # noqa: E731  -- any fixed network; an epsilon-prediction
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 50, 90])
    for prediction in ("epsilon", "v"):
        x0 = predict_x0(schedule, x_t, t, net(x_t, t), prediction)
        flat = x0.flatten(1)
        norm = flat.norm(dim=1, keepdim=True)
        unit_w = F.normalize(w, dim=-1)
        cos = (flat / norm * unit_w).sum(1, keepdim=True)
        grad = ((unit_w - cos * flat / norm) / norm).reshape(x0.shape)
        guided = CLIPGuidance(net, schedule, clip, ids, 2.5, prediction=prediction)
        out = guided(x_t, t)
        assert torch.allclose(predict_x0(schedule, x_t, t, out, prediction), x0 + 2.5 * grad, atol=1e-10)
        assert torch.equal(CLIPGuidance(net, schedule, clip, ids, 0.0, prediction=prediction)(x_t, t), net(x_t, t))
    with pytest.raises(ValueError, match="finite number"):
        CLIPGuidance(net, schedule, clip, ids, float("nan"))


# --- the text encoder, the tiny CLIP and the text-conditioned UNet --------------------------------


def test_text_encoder_pools_at_end_and_ignores_what_follows(tok):
    torch.manual_seed(0)
    enc = TextEncoder(len(tok), tok.max_length, width=16, layers=2, heads=4).eval()
    ids = tok.encode(["a bold seven", "a photo of the digit two"])
    states, mask = enc(ids)
    assert states.shape == (2, tok.max_length, 16) and torch.equal(mask, ids != 0)
    pooled = enc.pooled(ids)
    assert torch.equal(pooled, states[torch.arange(2), torch.tensor([3, 6])])  # <end> follows 3 and 6 words
    with pytest.raises(ValueError, match="LongTensor"):
        enc(ids[:, :5])
    with pytest.raises(ValueError, match="0..38"):
        enc(torch.full_like(ids, 99))


def test_train_clip_learns_to_match_digits_and_captions(tok):
    """150 steps on 512 captioned digits (3 s): the loss falls and zero-shot digit accuracy is well above chance."""
    data = C.captioned_digits("test", copies=1, seed=0)
    n = 512
    torch.manual_seed(0)
    clip = TinyCLIP(len(tok), tok.max_length, embed_dim=16, text_width=16, text_layers=1, heads=2, image_width=4)
    ids = tok.encode(data.captions[:n])
    losses = [s.loss for s in train_clip(clip, data.images[:n], ids, steps=150, batch_size=64, lr=3e-3, warmup_steps=0,
                                         truth=(data.attributes[:n], data.stated[:n]),
                                         generator=torch.Generator().manual_seed(0), progress=False)]
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:10]) / 10
    accuracy = float((zero_shot_digits(clip.eval(), tok, data.images[:n]) == data.attributes[:n, 0]).float().mean())
    assert accuracy > 0.2  # chance is 0.1
    with pytest.raises(ValueError, match="prompt ids"):
        next(train_clip(clip, data.images[:n], ids[:10], steps=1, progress=False))


@pytest.fixture(scope="module")
def base_and_text(tok):
    torch.manual_seed(0)
    base = UNet(in_channels=4, channels=8, mults=[1, 2], n_res=1, num_classes=10).eval()
    for p in base.parameters():  # a "trained" network: the zero-initialised output layers would hide everything
        torch.nn.init.normal_(p, std=0.05)
    text = TextEncoder(len(tok), tok.max_length, width=16, layers=1, heads=4)
    return base, text


def test_text_unet_from_starts_as_the_unconditional_model(base_and_text, tok):
    base, text = base_and_text
    model = text_unet_from(base, text).eval()
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    ids = tok.encode(["a bold seven", "a photo of the digit one", "the digit 4, thin"])
    null = torch.full((3,), base.null_class)
    assert torch.allclose(model(x, t, ids), base(x, t, null), atol=1e-5)
    assert torch.allclose(model(x, t), base(x, t, null), atol=1e-5)
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert torch.equal(model.null_class, tok.empty(1)[0])
    with pytest.raises(ValueError, match="a LongTensor \\[B, 12\\] from"):
        model(x, t, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="class-conditional"):
        text_unet_from(UNet(in_channels=4, channels=8, mults=[1, 2], n_res=1), text)
    with pytest.raises(ValueError, match="prompts, not labels"):
        TextUNet(unet=dict(in_channels=4, num_classes=10), text_encoder=text.config)


def test_training_with_prompts_moves_only_the_unet_and_drops_prompts_to_the_empty_one(base_and_text, tok):
    base, text = base_and_text
    model = text_unet_from(base, text)
    frozen = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    ids = tok.encode(["a bold seven", "the digit 4, thin"] * 8)
    for _ in train(model, schedules.cosine(1000), torch.randn(16, 4, 8, 8), labels=ids, steps=2, batch_size=8,
                   p_uncond=0.5, prediction="v", weight_decay=0.1, generator=torch.Generator().manual_seed(0), progress=False):
        pass
    assert all(torch.equal(v, frozen[k]) for k, v in model.text_encoder.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in model.unet.state_dict().items() if "_text." in k)
    dropped = _drop_labels(ids, 0.5, model.null_class, torch.Generator().manual_seed(1))
    is_null = (dropped == tok.empty(1)).all(1)
    assert 0 < int(is_null.sum()) < len(ids)
    assert torch.equal(dropped[~is_null], ids[~is_null])


def test_guidance_takes_prompts_like_labels(base_and_text, tok):
    base, text = base_and_text
    model = text_unet_from(base, text).eval()
    for p in model.unet.up_text.parameters():  # let the prompt matter
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([300, 300])
    ids = tok.encode(["a bold seven", "the digit 4, thin"])
    cond, uncond = model(x, t, ids), model(x, t, tok.empty(2))
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(classifier_free(model, ids, 3.0)(x, t), uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert torch.equal(conditional(model, ids)(x, t), cond)
    with model.ignoring_text():  # the only way in: without cross-attention every prompt gives the same output
        assert torch.equal(model(x, t, ids), model(x, t, tok.empty(2)))
    assert torch.equal(model(x, t, ids), cond)
    maps = model.attention_maps(x, t, ids)
    assert maps.shape == (2, tok.max_length, 8, 8)
    assert torch.allclose(maps.sum(1), torch.ones(2, 8, 8), atol=1e-5)
    assert float(maps[~tok.padding_mask(ids)[:, :, None, None].expand_as(maps)].abs().max()) == 0.0
    with pytest.raises(ValueError, match="<end>"):
        classifier_free(model, torch.zeros(2, tok.max_length, dtype=torch.long), 2.0)


def test_tiny_clip_logits_are_scaled_cosines(tok):
    torch.manual_seed(0)
    clip = TinyCLIP(len(tok), tok.max_length, embed_dim=8, text_width=16, text_layers=1, heads=2, image_width=4).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    ids = tok.encode(["a seven", "a bold one", "a photo of the digit two"])
    with torch.no_grad():
        logits = clip(x, ids)
    with torch.no_grad():
        cos = clip.encode_image(x) @ clip.encode_text(ids).T
    assert torch.allclose(logits, cos / 0.07, atol=1e-4) and float(cos.abs().max()) <= 1 + 1e-6
    with torch.no_grad():
        assert torch.allclose(clip.similarity(x, ids), cos.diagonal(), atol=1e-6)
    assert math.isclose(float(clip.scale().detach()), 1 / 0.07, rel_tol=1e-6)


# --- the scripts and the shipped checkpoints -------------------------------------------------------


def test_the_training_scripts_write_checkpoints_that_load_and_name_each_other(tmp_path, monkeypatch, load_script):
    from tinydiff.checkpoint import load_checkpoint, read_config
    from tinydiff.pretrained import load_diffusion_model

    clip_path, text_path = tmp_path / "clip", tmp_path / "text"
    monkeypatch.setattr("sys.argv", ["train_clip.py", "--steps", "2", "--batch-size", "16", "--copies", "1",
                                     "--output", str(clip_path)])
    load_script("train_clip").main()
    clip = load_checkpoint(clip_path)
    assert read_config(clip_path)["extra"]["tokenizer"] == C.tokenizer().config
    assert set(read_config(clip_path)["extra"]["test"]) >= {"zero_shot_digit_accuracy", "held_out_bold_accuracy"}
    monkeypatch.setattr("sys.argv", ["train_text_unet.py", "--steps", "2", "--batch-size", "4", "--copies", "1",
                                     "--clip", str(clip_path), "--output", str(text_path)])
    load_script("train_text_unet").main()
    model = load_diffusion_model(text_path)
    assert isinstance(model.net, TextUNet) and model.tokenizer.config == C.tokenizer().config
    assert model.extra["clip"]["sha256"] == read_config(clip_path)["sha256"] and model.codec is not None
    assert torch.equal(model.net.text_encoder.token.weight, clip.text.token.weight)  # the frozen text encoder is CLIP's


def test_the_shipped_text_model_reads_the_shipped_clip():
    from pathlib import Path

    from tinydiff.checkpoint import load_checkpoint, read_config
    from tinydiff.pretrained import load_diffusion_model

    checkpoints = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    model = load_diffusion_model(checkpoints / "mnist_text")
    assert model.extra["clip"]["sha256"] == read_config(checkpoints / "mnist_clip")["sha256"]
    assert model.extra["init"]["sha256"] == read_config(checkpoints / "mnist_latent")["sha256"]
    clip = load_checkpoint(checkpoints / "mnist_clip")
    for name, tensor in clip.text.state_dict().items():
        assert torch.equal(model.net.text_encoder.state_dict()[name], tensor), name


def test_the_shipped_clip_classifies_held_out_digits_well_above_chance(tok):
    """Zero-shot digit accuracy on the styled *test* digits (never trained on): chance is 0.1; we state >= 0.9."""
    from pathlib import Path

    from tinydiff.checkpoint import load_checkpoint

    clip = load_checkpoint(Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "mnist_clip")
    test = C.captioned_digits("test", copies=1, seed=1, hold_out=False)
    accuracy = float((zero_shot_digits(clip, tok, test.images) == test.attributes[:, 0]).float().mean())
    assert accuracy >= 0.9


def test_prompt_to_decoded_image_end_to_end_on_meta_tensors(tok):
    """The whole chain -- tokenizer ids, frozen text encoder, cross-attention UNet, classifier-free and CLIP
    guidance, DDIM, decoder -- runs on the meta device: nothing in it is tied to the CPU."""
    from tinydiff.latent import LatentCodec
    from tinydiff.models import Autoencoder
    from tinydiff.text_to_image import prompt_digits

    with torch.device("meta"):
        net = TextUNet(unet=dict(in_channels=4, channels=8, mults=[1, 2]),
                       text_encoder=dict(vocab_size=len(tok), max_length=tok.max_length, width=16, layers=1, heads=4))
        codec = LatentCodec(Autoencoder(channels=8, latent_channels=4), 1.0)
        clip = TinyCLIP(len(tok), tok.max_length, embed_dim=8, text_width=16, text_layers=1, heads=2, image_width=4)
    images = prompt_digits(net, schedules.cosine(1000), codec, tok, ["a bold seven", "a thin two"], guidance=3.0,
                           clip=clip, clip_guidance=2.0, steps=3)
    assert images.device.type == "meta" and images.shape == (2, 1, 32, 32)
