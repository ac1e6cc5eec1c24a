"""Sound as an image: the short-time Fourier transform, the mel scale, log-mel spectrograms, and back to sound by
Griffin-Lim (Part 15, notebook 17).

A diffusion model for images works on sound once sound is an image. The course's route is the one AudioLDM and
most speech models take:

    waveform x [B, N]  --STFT-->  |X| [B, F, M]  --mel filterbank-->  mel power [B, n_mels, M]  --log-->  the image

and back: undo the log, spread the mel power over the linear frequencies (least squares, :func:`mel_to_linear`),
then find a phase by Griffin-Lim (:func:`griffin_lim`). What the image drops is the **phase** (the STFT's angle) and
the fine frequency detail inside each mel band; Griffin-Lim finds *a* signal whose STFT magnitude matches, not the
original one.

- :func:`stft` / :func:`istft`: Hann window, hop n_fft / 4, centred frames (``torch.stft``); with that window and
  hop the overlapping windows sum to a constant, so the inverse is exact (the least-squares overlap-add of Griffin & Lim 1984).
- :func:`hz_to_mel` / :func:`mel_to_hz`: m = 2595 log10(1 + f / 700) (O'Shaughnessy 1987; the HTK formula).
- :func:`mel_filterbank`: triangles equally spaced in mel, each 1 at its centre frequency.
- :func:`log_mel` and :func:`inverse_log_mel`: the whole route, both ways.

Shapes: a waveform is [B, N] (float, in [-1, 1]); a spectrogram [B, F, M] with F = n_fft / 2 + 1 frequencies and
M = N / hop + 1 frames; a mel spectrogram [B, n_mels, M]. Every function works on the input's device and dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_waveform(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"a waveform must be a float tensor [B, N] (a batch of clips), got {got}")
    return x


def _check_n_fft(n_fft: int) -> int:
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 8 or n_fft % 4:
        raise ValueError(f"n_fft must be an int >= 8 divisible by 4 (the hop is n_fft / 4), got {n_fft!r}")
    return n_fft


def _window(n_fft: int, like: Tensor) -> Tensor:
    """The periodic Hann window of n_fft samples, on ``like``'s device and dtype."""
    return torch.hann_window(n_fft, periodic=True, device=like.device, dtype=like.dtype)


def stft(x: Tensor, n_fft: int = 256) -> Tensor:
    """The short-time Fourier transform of waveforms x [B, N]: complex [B, n_fft / 2 + 1, N / hop + 1], Hann window of
    n_fft samples, hop n_fft / 4, frames centred on multiples of the hop (the signal reflected at its ends)."""
    _check_waveform(x)
    n_fft = _check_n_fft(n_fft)
    if x.shape[1] < n_fft // 2 + 1:
        raise ValueError(f"a clip of {x.shape[1]} samples is too short for n_fft = {n_fft} (at least {n_fft // 2 + 1})")
    return torch.stft(x, n_fft, hop_length=n_fft // 4, window=_window(n_fft, x), center=True, return_complex=True)


def istft(spec: Tensor, length: int, n_fft: int = 256) -> Tensor:
    """The inverse of :func:`stft`: complex [B, n_fft / 2 + 1, M] -> waveforms [B, length]. Overlap-add of the
    windowed inverse transforms, divided by the summed squared window (Griffin & Lim 1984's least-squares estimate), so
    ``istft(stft(x), N) == x`` up to rounding."""
    n_fft = _check_n_fft(n_fft)
    if not isinstance(spec, Tensor) or not spec.is_complex() or spec.ndim != 3 or spec.shape[1] != n_fft // 2 + 1:
        raise ValueError(f"spec must be a complex STFT [B, {n_fft // 2 + 1}, M] (n_fft = {n_fft}), got "
                         f"{getattr(spec, 'dtype', type(spec).__name__)} {list(getattr(spec, 'shape', []))}")
    window = _window(n_fft, spec.real)
    return torch.istft(spec, n_fft, hop_length=n_fft // 4, window=window, center=True, length=length)


def hz_to_mel(f: Tensor | float) -> Tensor:
    """m = 2595 log10(1 + f / 700): equal steps in mel sound equally far apart (O'Shaughnessy 1987; 1000 Hz is
    about 1000 mel). [any] -> same."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """The inverse of :func:`hz_to_mel`: f = 700 (10^(m / 2595) - 1). [any] -> same."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular filters [n_mels, n_fft / 2 + 1], float64 on the CPU: filter j rises linearly from the centre
    frequency of filter j - 1 to its own centre (where it is 1) and falls to the centre of filter j + 1; the n_mels + 2
    edges are equally spaced in mel between f_min and f_max (default: the Nyquist frequency, sample_rate / 2)."""
    n_fft = _check_n_fft(n_fft)
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got {f_min} and {f_max}")
    if n_mels < 1:
        raise ValueError(f"n_mels must be a positive int, got {n_mels}")
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # the STFT's bin frequencies
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def log_mel(x: Tensor, sample_rate: int, n_fft: int = 256, n_mels: int = 32, eps: float = 1e-5) -> Tensor:
    """The log-mel spectrogram of waveforms x [B, N]: log(eps + F |STFT(x)|^2) with F = :func:`mel_filterbank`,
    [B, n_mels, N / hop + 1] in x's dtype. ``eps`` is the floor of silence (log 1e-5 = -11.5)."""
    power = stft(x, n_fft).abs().pow(2)
    bank = mel_filterbank(n_mels, n_fft, sample_rate).to(device=power.device, dtype=power.dtype)
    return torch.log(eps + torch.einsum("mf,bft->bmt", bank, power))


def mel_to_linear(mel_power: Tensor, sample_rate: int, n_fft: int = 256) -> Tensor:
    """Spread mel power [B, n_mels, M] back over the n_fft / 2 + 1 linear frequencies: the least-squares solution of
    F P = mel_power (the pseudo-inverse of the filterbank), clamped at 0 -- the fine detail inside each band is
    gone, so this is an estimate. Returns power [B, n_fft / 2 + 1, M]."""
    bank = mel_filterbank(mel_power.shape[1], n_fft, sample_rate)
    inverse = torch.linalg.pinv(bank).to(device=mel_power.device, dtype=mel_power.dtype)  # [F, n_mels], on the CPU first
    return torch.einsum("fm,bmt->bft", inverse, mel_power).clamp(min=0.0)


def griffin_lim(magnitude: Tensor, length: int, n_fft: int = 256, n_iter: int = 32, momentum: float = 0.99,
                generator: torch.Generator | None = None) -> Tensor:
    """A waveform [B, length] whose STFT magnitude is close to ``magnitude`` [B, n_fft / 2 + 1, M] (Griffin & Lim
    1984): start from random phases, then repeat X <- magnitude * exp(i angle(STFT(ISTFT(X)))). With ``momentum``
    = 0 this is their algorithm, and no step increases the distance between |STFT(x)| and the target; with
    ``momentum`` > 0 it is the "fast Griffin-Lim" of Perraudin et al. 2013, which extrapolates each update
    (0.99, their recommended value, converges in far fewer steps)."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1) (0 = plain Griffin-Lim), got {momentum}")
    gen_device = generator.device if generator is not None else magnitude.device
    phase = torch.rand(magnitude.shape, generator=generator, device=gen_device, dtype=magnitude.dtype).to(magnitude.device)
    angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase)
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles, length, n_fft), n_fft)
        accelerated = rebuilt - momentum / (1 + momentum) * previous if momentum else rebuilt
        previous = rebuilt
        angles = torch.sgn(accelerated)  # the unit complex number of each phase, z / |z| (0 where z = 0)
    return istft(magnitude * angles, length, n_fft)


def inverse_log_mel(image: Tensor, length: int, sample_rate: int, n_fft: int = 256, n_iter: int = 32,
                    eps: float = 1e-5, generator: torch.Generator | None = None) -> Tensor:
    """Back from a log-mel spectrogram [B, n_mels, M] to waveforms [B, length]: exp - eps, :func:`mel_to_linear`,
    the square root (power -> magnitude), then :func:`griffin_lim`."""
    power = mel_to_linear((image.exp() - eps).clamp(min=0.0), sample_rate, n_fft)
    return griffin_lim(power.sqrt(), length, n_fft, n_iter, generator=generator)


# --- storing speech in 8 bits, and the shipped spoken digits ----------------------------------------

MU = 255


def mu_law_encode(x: Tensor) -> Tensor:
    """Waveforms in [-1, 1] -> 8-bit codes 0..255 (uint8), by the mu-law of telephone speech (ITU-T 1988, mu = 255,
    in its continuous form): F(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu), then 256 equal steps of F. Quiet samples
    get finer steps than loud ones, as hearing wants. [any] -> same shape."""
    f = torch.sign(x) * torch.log1p(MU * x.abs().clamp(max=1.0)) / math.log1p(MU)
    return ((f + 1) / 2 * MU).round().to(torch.uint8)


def mu_law_decode(codes: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The inverse of :func:`mu_law_encode`: codes 0..255 -> waveforms in [-1, 1] of ``dtype``,
    x = sign(f) ((1 + mu)^|f| - 1) / mu with f = 2 code / 255 - 1. [any] -> same shape."""
    f = codes.to(dtype) / MU * 2 - 1
    return torch.sign(f) * torch.expm1(f.abs() * math.log1p(MU)) / MU


SAMPLE_RATE = 8000
CLIP_SAMPLES = 6080
"""Every shipped clip: 0.76 s at 8 kHz, so that :func:`log_mel` with n_fft 256 gives 96 frames."""


def load_spoken_digits(split: str = "train", path=None) -> tuple[Tensor, Tensor]:
    """The shipped spoken digits (``data/spoken_digits.npz``, made by ``scripts/make_spoken_digits.py``): waveforms
    float32 [N, 6080] in [-1, 1] at 8 kHz (decoded from 8-bit mu-law) and the digits LongTensor [N]."""
    import numpy as np

    from .mnist import find_data_file

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    file = find_data_file("spoken_digits.npz", path, "the spoken digits",
                          "python scripts/make_spoken_digits.py (needs espeak-ng: apt-get install espeak-ng)")
    with np.load(file, allow_pickle=False) as data:
        codes, labels = data[f"{split}_audio"], data[f"{split}_labels"]
    return mu_law_decode(torch.from_numpy(codes)), torch.from_numpy(labels).long()


# --- the images the course's UNet takes -------------------------------------------------------------

N_MELS = 64
"""Mel bands of the course's spectrogram images: 64 keep the round trip's spectral convergence near 0.2 on the shipped
clips, where 32 give about 0.45 (notebook 17 measures both)."""
LOG_MEL_RANGE = (math.log(1e-5), 8.0)
"""Log mel power mapped to -1 and +1: the floor of silence, and a little above the loudest band of any shipped clip
(7.2)."""


def _check_clips(x: Tensor, sample_rate: int) -> Tensor:
    _check_waveform(x)
    if sample_rate != SAMPLE_RATE or x.shape[-1] != CLIP_SAMPLES:
        raise ValueError(f"the spectrogram images are made from clips of {CLIP_SAMPLES} samples at {SAMPLE_RATE} Hz "
                         f"(0.76 s), got {x.shape[-1]} samples at {sample_rate} Hz: resample to {SAMPLE_RATE} Hz "
                         f"and cut or zero-pad to {CLIP_SAMPLES} samples first")
    return x


def spectrogram_images(x: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Clips [B, 6080] at 8 kHz -> images [B, 1, 64, 96] in [-1, 1]: :func:`log_mel` with 64 mel bands, mapped
    linearly from :data:`LOG_MEL_RANGE` to [-1, 1] (silence is -1). Row 0 is the lowest band, column k the k-th frame
    (every 8 ms)."""
    low, high = LOG_MEL_RANGE
    image = (log_mel(_check_clips(x, sample_rate), sample_rate, n_mels=N_MELS) - low) / (high - low) * 2 - 1
    return image[:, None]


def waveforms_from_images(images: Tensor, n_iter: int = 64, generator: torch.Generator | None = None) -> Tensor:
    """The inverse of :func:`spectrogram_images`: images [B, 1, 64, 96] -> clips [B, 6080] by :func:`inverse_log_mel`
    (``n_iter`` steps of Griffin-Lim from random phases drawn by ``generator``). Values outside [-1, 1] are clamped
    first: a generated image may overshoot, and the exponential would turn that into a loud click."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, N_MELS, CLIP_SAMPLES // (256 // 4) + 1):
        got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"spectrogram images must be [B, 1, {N_MELS}, 96] (from spectrogram_images), got {got}")
    low, high = LOG_MEL_RANGE
    log_power = (images[:, 0].clamp(-1, 1) + 1) / 2 * (high - low) + low
    return inverse_log_mel(log_power, CLIP_SAMPLES, SAMPLE_RATE, n_iter=n_iter, generator=generator)


def wav_bytes(waveforms: Tensor, sample_rate: int = SAMPLE_RATE, gap: float = 0.25, peak: float = 0.9) -> bytes:
    """Clips [B, N] (or one clip [N]) as one WAV file in memory: 16-bit PCM, mono, each clip scaled so its loudest
    sample is ``peak`` (nothing clips, quiet clips are heard), the clips one after another with ``gap`` seconds of
    silence between them. For ``IPython.display.Audio(data=...)``, an ``ipywidgets.Audio`` or a ``.wav`` file."""
    import io
    import wave

    clips = waveforms[None] if waveforms.ndim == 1 else waveforms
    _check_waveform(clips)
    silence = torch.zeros(round(gap * sample_rate))
    parts = []
    for i, clip in enumerate(clips.detach().to("cpu", torch.float64)):
        parts += [silence] if i else []
        parts.append(clip * (peak / clip.abs().max().clamp(min=1e-12)))
    samples = (torch.cat(parts) * 32767).round().clamp(-32768, 32767).to(torch.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.numpy().tobytes())
    return buffer.getvalue()
