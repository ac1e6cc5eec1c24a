"""Make data/spoken_digits.npz: "zero" ... "nine" spoken by the espeak-ng speech synthesiser, at 8 kHz (notebook 17).

    apt-get install espeak-ng          # Debian / Ubuntu: the synthesiser (GPL-3.0-or-later; only this script runs it)
    python scripts/make_spoken_digits.py

For each split (``train``: 200 clips per digit, seed 0; ``test``: 50 per digit, seed 1) every clip draws, with
``numpy.random.default_rng(seed)``, one of espeak-ng's English accents (:data:`ACCENTS`), one of its voice variants
(:data:`VARIANTS`), a speed of 140-220 words per minute and a pitch of 20-80 (espeak-ng's 0-99 scale). The
synthesiser writes 22,050 Hz; the clip is resampled to 8 kHz (``scipy.signal.resample_poly``, 160 / 441), its
silence trimmed (samples below 2 % of the peak at either end), scaled to a peak of 0.9, centred in 6,080 samples
(0.76 s) and stored in 8-bit mu-law (:func:`tinydiff.data.audio.mu_law_encode`). The same espeak-ng version and
seed give the same file; the version is recorded in it.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tinydiff.data.audio import CLIP_SAMPLES, SAMPLE_RATE, mu_law_encode  # noqa: E402

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPLITS = {"train": (200, 0), "test": (50, 1)}


def speak(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's waveform of one word at 8 kHz, float32."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        if w.getframerate() != 22050 or w.getsampwidth() != 2:
            raise SystemExit(f"espeak-ng wrote {w.getframerate()} Hz, {8 * w.getsampwidth()} bit; this script expects "
                             "22,050 Hz 16-bit")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64) / 32768
    return resample_poly(x, 160, 441).astype(np.float32)


def clip(x: np.ndarray) -> np.ndarray:
    """Trim the silence, scale to a peak of 0.9 and centre in CLIP_SAMPLES samples."""
    loud = np.nonzero(np.abs(x) > 0.02 * np.abs(x).max())[0]
    x = x[loud[0]: loud[-1] + 1]
    if len(x) > CLIP_SAMPLES:
        raise SystemExit(f"a word of {len(x)} samples does not fit {CLIP_SAMPLES}: lower the speeds' range")
    out = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    start = (CLIP_SAMPLES - len(x)) // 2
    out[start: start + len(x)] = 0.9 * x / np.abs(x).max()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="data/spoken_digits.npz")
    args = p.parse_args()
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout.split("  Data at")[0].strip()
    arrays = {"sample_rate": np.array(SAMPLE_RATE), "espeak_ng_version": np.array(version)}
    for split, (per_digit, seed) in SPLITS.items():
        rng = np.random.default_rng(seed)
        audio, labels, voices, speeds, pitches = [], [], [], [], []
        for digit in range(10):
            for _ in range(per_digit):
                accent, variant = ACCENTS[rng.integers(len(ACCENTS))], VARIANTS[rng.integers(len(VARIANTS))]
                voice = accent + (f"+{variant}" if variant else "")
                speed, pitch = int(rng.integers(140, 221)), int(rng.integers(20, 81))
                audio.append(clip(speak(WORDS[digit], voice, speed, pitch)))
                labels.append(digit)
                voices.append(voice)
                speeds.append(speed)
                pitches.append(pitch)
        order = rng.permutation(len(labels))  # not sorted by digit
        codes = mu_law_encode(torch.from_numpy(np.stack(audio))).numpy()
        arrays.update({f"{split}_audio": codes[order], f"{split}_labels": np.array(labels, dtype=np.uint8)[order],
                       f"{split}_voices": np.array(voices)[order], f"{split}_speeds": np.array(speeds, dtype=np.uint8)[order],
                       f"{split}_pitches": np.array(pitches, dtype=np.uint8)[order]})
        print(f"{split}: {len(labels)} clips", flush=True)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size:,} bytes) with {version}")


if __name__ == "__main__":
    main()
