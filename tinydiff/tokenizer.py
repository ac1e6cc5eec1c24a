"""A word-level tokenizer for the small vocabulary of the digit captions (Part 11, notebook 13).

Text models read integers, not strings. CLIP uses a byte-pair encoding of 49,152 sub-words (Radford et
al. 2021, sec. 2.4); our captions use a few dozen words, so one token per word is enough and a learner can
read the ids by eye. A prompt becomes::

    "a bold seven"  ->  [a, bold, seven, <end>, <pad>, <pad>, ...]  ->  [2, 17, 28, 1, 0, 0, ...]   (max_length ids)

- ``<end>`` closes every prompt. The text encoder reads the prompt's meaning from the state at ``<end>``,
  which has attended to every word (CLIP's "[EOS]" token, sec. 2.4).
- ``<pad>`` (id 0) fills the rest, and the attention masks ignore it: padded positions change nothing.
- The *empty* prompt is ``[<end>, <pad>, ...]``. It is the null condition of classifier-free guidance, as
  the empty caption is in Stable Diffusion. :meth:`Tokenizer.empty` makes it; :meth:`Tokenizer.encode`
  refuses an empty string, so a learner cannot ask for it by accident.

An unknown word is an error that lists the vocabulary: a silent "unknown" token would make the model
ignore a word the learner thinks it reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

PAD, END = "<pad>", "<end>"
_WORD = re.compile(r"[a-z0-9]+|,")


class Tokenizer:
    """Words <-> ids: ``encode(prompts) -> LongTensor [B, max_length]``, ``decode(ids) -> list[str]``.

    Args:
        words: the vocabulary, without the two special tokens (ids 0 = ``<pad>`` and 1 = ``<end>``
            come first); lower-case words or ``","``.
        max_length: ids per prompt, ``<end>`` included.
    """

    def __init__(self, words: Sequence[str], max_length: int) -> None:
        words = list(words)
        if len(set(words)) != len(words) or PAD in words or END in words:
            raise ValueError("the vocabulary must list each word once, without <pad> and <end>")
        bad = [w for w in words if not _WORD.fullmatch(w)]
        if bad:
            raise ValueError(f"vocabulary words must be lower-case letters/digits or ',', got {bad}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for a word and <end>, got {max_length}")
        self.vocabulary = [PAD, END, *words]
        self.ids = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_length = int(max_length)
        self.config = dict(words=words, max_length=self.max_length)

    def with_words(self, words: Sequence[str]) -> Tokenizer:
        """A tokenizer that also knows ``words``, appended after the vocabulary: every old word keeps its id, so
        old prompts encode as before (textual inversion's new word, :func:`tinydiff.adapt.add_word`)."""
        known = [w for w in words if w in self.ids]
        if known:
            raise ValueError(f"{known} already in the vocabulary: a new word needs a new name")
        return Tokenizer([*self.vocabulary[2:], *words], self.max_length)

    @property
    def pad_id(self) -> int:
        return self.ids[PAD]

    @property
    def end_id(self) -> int:
        return self.ids[END]

    def __len__(self) -> int:
        return len(self.vocabulary)

    def words(self, prompt: str) -> list[str]:
        """The words of one prompt: lower-cased, split at spaces, commas kept as words."""
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
        text = prompt.lower()
        words = _WORD.findall(text)
        leftover = _WORD.sub(" ", text).split()
        if leftover:
            raise ValueError(f"prompt {prompt!r} has characters the tokenizer does not read: {leftover} "
                             "(use letters, digits, spaces and commas)")
        return words

    def encode(self, prompts: str | Sequence[str]) -> Tensor:
        """Token ids [B, max_length] of one prompt or a list of prompts (``<end>`` after the words, then ``<pad>``)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("no prompts given: pass a string or a non-empty list of strings")
        rows = []
        for prompt in prompts:
            words = self.words(prompt)
            if not words:
                raise ValueError(f"prompt {prompt!r} is empty; for the unconditional (null) prompt use "
                                 "tokenizer.empty(batch_size)")
            unknown = [w for w in words if w not in self.ids or w in (PAD, END)]
            if unknown:
                raise ValueError(f"prompt {prompt!r}: unknown word(s) {unknown}. The vocabulary is: "
                                 + " ".join(self.vocabulary[2:]))
            if len(words) + 1 > self.max_length:
                raise ValueError(f"prompt {prompt!r} has {len(words)} words; at most {self.max_length - 1} fit "
                                 f"(max_length = {self.max_length}, one id is <end>)")
            ids = [self.ids[w] for w in words] + [self.end_id]
            rows.append(ids + [self.pad_id] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def empty(self, batch_size: int = 1) -> Tensor:
        """The empty prompt ``[<end>, <pad>, ...]`` for each of ``batch_size`` rows: the null condition. [B, max_length]."""
        ids = torch.full((batch_size, self.max_length), self.pad_id, dtype=torch.long)
        ids[:, 0] = self.end_id
        return ids

    def decode(self, ids: Tensor) -> list[str]:
        """Prompts of ids [B, L] (or [L]): the words before ``<end>``, joined by spaces ("" for the empty prompt)."""
        ids = self.check(ids if ids.ndim == 2 else ids[None])
        out = []
        for row in ids.tolist():
            words = [self.vocabulary[i] for i in row[: row.index(self.end_id)]]
            out.append(" ".join(words).replace(" ,", ","))
        return out

    def check(self, ids: Tensor) -> Tensor:
        """Raise unless ids is a LongTensor [B, max_length] of prompts as :meth:`encode` writes them; return it."""
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype != torch.long or ids.shape[1] != self.max_length:
            got = f"{ids.dtype} {list(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"token ids must be a LongTensor [B, {self.max_length}] from tokenizer.encode, got {got}")
        if ids.device.type != "meta" and ids.numel():
            if bool(((ids < 0) | (ids >= len(self))).any()):
                raise ValueError(f"token ids must lie in 0..{len(self) - 1} (the vocabulary's size is {len(self)})")
            if not bool((ids == self.end_id).any(1).all()):
                raise ValueError("every row of token ids needs an <end> token: make them with tokenizer.encode")
        return ids

    def padding_mask(self, ids: Tensor) -> Tensor:
        """True where a position holds a real token (a word or ``<end>``), False at ``<pad>``: BoolTensor [B, L]."""
        return ids != self.pad_id
