"""Sound as an image (notebook 17): the STFT, the mel scale and filterbank, and Griffin-Lim, against closed forms."""

import math

import pytest
import torch

from tinydiff.data import audio

SR, N_FFT = 8000, 256


def tone(freq: float, seconds: float = 0.5, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return torch.sin(2 * math.pi * freq * t)[None]


def test_a_pure_tone_peaks_at_its_frequency_bin():
    for k in (8, 20, 57):  # bin k is the frequency k * SR / N_FFT
        spec = audio.stft(tone(k * SR / N_FFT), N_FFT).abs()
        assert spec.shape == (1, N_FFT // 2 + 1, 4000 // (N_FFT // 4) + 1)
        middle = spec[0, :, 5:-5]  # away from the reflected ends
        assert bool((middle.argmax(0) == k).all())
        # Hann window: a tone on a bin leaks into its two neighbours at half the peak, and nowhere else
        column = middle[:, 10]
        torch.testing.assert_close(column[k - 1] / column[k], torch.tensor(0.5, dtype=torch.float64), atol=1e-6, rtol=0)
        assert float(column[k + 3:].max()) < 1e-9 * float(column[k])


def test_the_inverse_stft_is_exact_and_energy_is_kept():
    x = torch.randn(3, 2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = audio.stft(x, N_FFT)
    torch.testing.assert_close(audio.istft(spec, 2000, N_FFT), x, atol=1e-10, rtol=0)
    # Parseval, frame by frame: sum_f |X_f|^2 over the full spectrum = N_FFT * sum_n (w x)^2; with the one-sided
    # spectrum the interior bins count twice. A Hann window at hop N_FFT / 4 sums (squared) to 3 N_FFT / 8 everywhere.
    full = spec.abs().pow(2)
    two_sided = full[:, 0] + full[:, -1] + 2 * full[:, 1:-1].sum(1)  # [B, M]
    energy = two_sided[:, 6:-6].sum(1) / N_FFT / (3 / 8 * N_FFT / (N_FFT // 4))
    inside = x[:, 6 * 64: -6 * 64].pow(2).sum(1)
    assert torch.allclose(energy, inside, rtol=0.05)


def test_the_mel_scale_at_its_known_points():
    assert float(audio.hz_to_mel(0.0)) == 0.0
    torch.testing.assert_close(audio.hz_to_mel(1000.0), torch.tensor(1000.0, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(audio.hz_to_mel(700.0), torch.tensor(2595 * math.log10(2), dtype=torch.float64))
    f = torch.tensor([0.0, 50.0, 440.0, 3999.0], dtype=torch.float64)
    torch.testing.assert_close(audio.mel_to_hz(audio.hz_to_mel(f)), f)


def test_the_filterbank_is_triangles_that_peak_at_their_centres():
    bank = audio.mel_filterbank(20, 1024, SR)
    assert bank.shape == (20, 513) and float(bank.min()) >= 0 and float(bank.max()) <= 1
    edges = audio.mel_to_hz(torch.linspace(0, float(audio.hz_to_mel(SR / 2)), 22, dtype=torch.float64))
    freqs = torch.linspace(0, SR / 2, 513, dtype=torch.float64)
    for j in (3, 10, 19):
        centre = edges[j + 1]
        nearest = int((freqs - centre).abs().argmin())
        assert float(bank[j, nearest]) > 1 - (SR / 2 / 512) / float(centre - edges[j])  # within a bin of the peak
        outside = (freqs < edges[j]) | (freqs > edges[j + 2])
        assert float(bank[j, outside].abs().max()) == 0.0
    with pytest.raises(ValueError, match="f_max"):
        audio.mel_filterbank(20, 256, SR, f_max=5000)


def test_griffin_lim_finds_a_tone_from_its_magnitude():
    x = tone(440.0) * 0.5
    magnitude = audio.stft(x, N_FFT).abs()
    y = audio.griffin_lim(magnitude, x.shape[1], N_FFT, n_iter=64, generator=torch.Generator().manual_seed(0))
    rebuilt = audio.stft(y, N_FFT).abs()
    convergence = float((rebuilt - magnitude).norm() / magnitude.norm())  # the spectral convergence
    assert convergence < 0.08  # measured 0.070 (fast, 64 steps); plain: 0.101 after 64, 0.074 after 128
    plain = audio.griffin_lim(magnitude, x.shape[1], N_FFT, n_iter=64, momentum=0.0,
                              generator=torch.Generator().manual_seed(0))
    assert float((audio.stft(plain, N_FFT).abs() - magnitude).norm() / magnitude.norm()) > convergence  # slower


def test_the_log_mel_round_trip_keeps_a_tone():
    x = tone(440.0) * 0.5
    image = audio.log_mel(x, SR, N_FFT, n_mels=64)
    assert image.shape == (1, 64, 4000 // 64 + 1) and image.dtype == x.dtype
    y = audio.inverse_log_mel(image, x.shape[1], SR, N_FFT, n_iter=48, generator=torch.Generator().manual_seed(0))
    spec_x, spec_y = audio.stft(x, N_FFT).abs(), audio.stft(y, N_FFT).abs()
    assert int(spec_y[0, :, 10:-10].mean(1).argmax()) == int(spec_x[0, :, 10:-10].mean(1).argmax())  # the same pitch
    assert abs(float(y.pow(2).mean()) / float(x.pow(2).mean()) - 1) < 0.2  # about the same loudness


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"waveform must be a float tensor \[B, N\]"):
        audio.stft(torch.zeros(4000), N_FFT)
    with pytest.raises(ValueError, match="too short"):
        audio.stft(torch.zeros(1, 100), N_FFT)
    with pytest.raises(ValueError, match="divisible by 4"):
        audio.stft(torch.zeros(1, 4000), 250)
    with pytest.raises(ValueError, match="complex STFT"):
        audio.istft(torch.zeros(1, 129, 10), 4000, N_FFT)


def test_mu_law_steps_are_fine_where_speech_is_quiet():
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    codes = audio.mu_law_encode(x)
    assert codes.dtype == torch.uint8 and int(codes[0]) == 0 and int(codes[-1]) == 255
    error = (audio.mu_law_decode(codes, torch.float64) - x).abs()
    # half a code step in F = ln(1 + mu|x|) / ln(1 + mu) is 1 / 255; dx/dF = ln(1 + mu) (1 + mu|x|) / mu
    bound = (1 / 255) * math.log(256) * (1 + 255 * x.abs()) / 255
    assert bool((error <= bound * 1.02).all())  # the bound is linearised; the exact step is a little larger
    assert float(error[x.abs() < 0.01].max()) < 0.0012 < 0.015 < float(error[x.abs() > 0.95].max())


def test_the_shipped_spoken_digits():
    x, y = audio.load_spoken_digits("train")
    assert x.shape == (2000, audio.CLIP_SAMPLES) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=10).tolist() == [200] * 10
    assert float(x.abs().max()) <= 1.0 and float(x.abs().amax(1).min()) > 0.8  # every clip peaks near 0.9
    xt, yt = audio.load_spoken_digits("test")
    assert xt.shape == (500, audio.CLIP_SAMPLES) and torch.bincount(yt, minlength=10).tolist() == [50] * 10
    image = audio.log_mel(x[:4], audio.SAMPLE_RATE)
    assert image.shape == (4, 32, 96)
    with pytest.raises(ValueError, match="split"):
        audio.load_spoken_digits("validation")


def test_spectrogram_images_fill_the_unet_range_and_come_back():
    clip = 0.5 * tone(440.0, seconds=audio.CLIP_SAMPLES / SR).float()  # A4, half scale
    image = audio.spectrogram_images(clip)
    assert image.shape == (1, 1, audio.N_MELS, 96) and float(image.min()) >= -1 and float(image.max()) <= 1
    row = int(image[0, 0, :, 48].argmax())  # the band holding 440 Hz is the loudest
    bank = audio.mel_filterbank(audio.N_MELS, 256, SR)
    assert row == int(bank[:, round(440 * 256 / SR)].argmax())
    silence = audio.spectrogram_images(torch.zeros(1, audio.CLIP_SAMPLES))
    assert bool((silence == -1).all())  # log(eps) is the bottom of the range
    back = audio.waveforms_from_images(image, generator=torch.Generator().manual_seed(0))
    again = audio.spectrogram_images(back)
    assert float((again - image)[..., 4:-4].abs().mean()) < 0.05  # the magnitude survives; the phase is new


def test_clips_and_images_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="6080 samples at 8000 Hz.*resample"):
        audio.spectrogram_images(torch.zeros(2, 8000))
    with pytest.raises(ValueError, match="got 6080 samples at 16000 Hz"):
        audio.spectrogram_images(torch.zeros(2, audio.CLIP_SAMPLES), sample_rate=16000)
    with pytest.raises(ValueError, match=r"\[B, 1, 64, 96\]"):
        audio.waveforms_from_images(torch.zeros(2, 1, 32, 96))
