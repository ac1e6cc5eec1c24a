"""Textual inversion's new word (Gal et al. 2022): the tokenizer and text encoder grow by one token, and training
moves that token's embedding row and nothing else -- weight decay included."""

import copy

import pytest
import torch

from tinydiff.data import captions as C
from tinydiff import schedules
from tinydiff.adapt import NEW_WORD_PATTERNS, add_word, freeze
from tinydiff.models import UNet
from tinydiff.models.clip import TextEncoder
from tinydiff.models.text_unet import text_unet_from
from tinydiff.train import train


@pytest.fixture()
def tok():
    return C.tokenizer()


@pytest.fixture()
def model(tok):
    torch.manual_seed(0)
    base = UNet(in_channels=4, channels=8, mults=[1, 2], n_res=1, num_classes=10).eval()
    for p in base.parameters():  # a "trained" network: zero-initialised output layers would hide everything
        torch.nn.init.normal_(p, std=0.05)
    return text_unet_from(base, TextEncoder(len(tok), tok.max_length, width=16, layers=1, heads=4)).eval()


def test_with_words_keeps_every_old_id(tok):
    grown = tok.with_words(["hollow"])
    assert grown.vocabulary == [*tok.vocabulary, "hollow"] and grown.ids["hollow"] == len(tok)
    prompts = ["a bold seven", "the digit 4, thin"]
    assert torch.equal(grown.encode(prompts), tok.encode(prompts))
    assert grown.decode(grown.encode("a hollow seven")) == ["a hollow seven"]
    with pytest.raises(ValueError, match="unknown word"):
        tok.encode("a hollow seven")  # the old tokenizer is unchanged
    with pytest.raises(ValueError, match="already in the vocabulary"):
        tok.with_words(["bold"])


def test_a_new_word_leaves_every_old_prompt_exactly_as_it_was(model, tok):
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    old = tok.encode(["a bold seven", "the digit 4, thin"])
    with torch.no_grad():
        before = model(x, t, old)
        grown = add_word(model, tok, "hollow", init_from="bold")
        assert torch.equal(model(x, t, old), before)  # bit for bit
        # the new row starts as a copy of "bold": the new prompt gives exactly the old one's output
        assert torch.equal(model(x, t, grown.encode(["a hollow seven", "the digit 4, thin"])), before)
    assert model.text_encoder.token.num_embeddings == len(grown) == len(tok) + 1
    second = add_word(model, grown, "dotted")
    assert second.ids["dotted"] == len(grown) and model.text_encoder.token.new.shape == (2, 16)
    mean = model.text_encoder.token.base.weight[2:].mean(0)  # default start: the mean of the word rows
    assert torch.equal(model.text_encoder.token.new[1].detach(), mean)


def test_textual_inversion_trains_the_new_row_and_nothing_else(model, tok):
    grown = add_word(model, tok, "hollow", init_from="bold")
    assert freeze(model, NEW_WORD_PATTERNS) == 16  # one row of the text width
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = grown.encode(["a hollow seven", "a hollow three"] * 4)
    for _ in train(model, schedules.cosine(1000), torch.randn(8, 4, 8, 8), labels=ids, steps=3, batch_size=4,
                   prediction="v", weight_decay=0.1, lr=1e-2, generator=torch.Generator().manual_seed(0),
                   progress=False):
        pass
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["text_encoder.token.new"]  # the frozen rows did not decay


def test_add_word_says_what_is_wrong(model, tok):
    with pytest.raises(ValueError, match="text-conditioned network"):
        add_word(UNet(in_channels=1, channels=8, mults=[1], n_res=1), tok, "hollow")
    with pytest.raises(ValueError, match="init_from must be a word"):
        add_word(model, tok, "hollow", init_from="<end>")
    with pytest.raises(ValueError, match="already in the vocabulary"):
        add_word(model, tok, "seven")
    with pytest.raises(ValueError, match="the tokenizer has"):
        add_word(model, tok.with_words(["hollow"]), "dotted")


def test_word_files_are_small_round_trip_and_refuse_another_base(model, tok, tmp_path):
    from tinydiff.adapt import load_words, save_words
    from tinydiff.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "base", model, model.config)
    other = copy.deepcopy(model)
    torch.nn.init.normal_(other.text_encoder.token.weight)
    save_checkpoint(tmp_path / "other", other, other.config)
    fresh = copy.deepcopy(model)
    grown = add_word(model, tok, "hollow")
    with torch.no_grad():
        model.text_encoder.token.new.normal_()  # a "learned" row
    weights = save_words(tmp_path / "hollow", model, grown, tmp_path / "base")
    assert weights.stat().st_size < 1024  # one row of 16 floats and a header: under 1 KB
    loaded = load_words(tmp_path / "hollow", fresh, tok, tmp_path / "base")
    assert loaded.vocabulary == grown.vocabulary
    x, t, ids = torch.randn(2, 4, 8, 8), torch.tensor([5, 900]), grown.encode(["a hollow seven", "a bold one"])
    with torch.no_grad():
        assert torch.equal(fresh(x, t, ids), model(x, t, ids))
    with pytest.raises(ValueError, match="SHA-256"):
        load_words(tmp_path / "hollow", copy.deepcopy(other), tok, tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="save_words"):
        load_words(tmp_path / "missing", fresh, tok, tmp_path / "base")
    with pytest.raises(ValueError, match="no new words"):
        save_words(tmp_path / "none", other, tok, tmp_path / "other")
