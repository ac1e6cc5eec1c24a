"""Measure the sound and video models of notebook 17 beside real data: benchmarks/results/sound_video.json.

    OMP_WAIT_POLICY=PASSIVE python scripts/eval_sound_video.py

Sound (``data/checkpoints/spoken_digits_ddpm``, judged by ``spoken_digits_classifier``): ``--n`` generated clips
(the digits in turn) at each guidance scale of ``--audio-scales``, sampled as spectrogram images by DDIM; the judge's
accuracy on them against its accuracy on the 500 held-out real clips, and FD in its features against the held-out
clips' beside the floor (as many training clips, as many of each digit, against the same held-out clips).

Video (``moving_digits_ddpm``, the per-frame baseline ``moving_frames_ddpm``, judged frame by frame by
``moving_frames_classifier``): ``--n`` clips of 12 frames from each at each scale of ``--video-scales``, and as many
real clips of test digits; :func:`tinydiff.video.temporal_report` of each (class kept in every frame, identity drift,
ink spread, smooth steps, frame FD: frame k of every clip against 2,000 real test frames, averaged over k).

Every number is a property of the seeds (seed 0 for the samples); the JSON records, for each part, the command,
machine, load and wall time (``sound_run``, ``video_run``). ``--parts video`` measures one part again and keeps the
other; generated samples are cached in ``--cache`` and reused by a rerun.
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import time
from pathlib import Path

import torch

from tinydiff import video
from tinydiff.checkpoint import load_checkpoint
from tinydiff.data import load_mnist
from tinydiff.data.audio import load_spoken_digits, spectrogram_images
from tinydiff.data.moving import clip_stream
from tinydiff.evaluation import balanced_labels, digit_report, sample_digits
from tinydiff.metrics import classifier_features
from tinydiff.pretrained import load_diffusion_model
from tinydiff.registry import SamplerSpec

CHECKPOINTS = Path("data/checkpoints")


def real_video(n: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real clips of 12 frames from the test digits, n / 10 of each digit (as the generated rows have), and
    their digits."""
    clips, digits = clip_stream(*load_mnist("test"), frames=12)(20 * n, generator=torch.Generator().manual_seed(seed))
    pick = balanced_subset(digits, n)
    return clips[pick], digits[pick]


def real_frames(n: int = 2000, seed: int = 2) -> torch.Tensor:
    """The reference frames of the video judge: ``n`` frames from the test digits (as its training script tests on)."""
    return clip_stream(*load_mnist("test"), frames=None)(n, generator=torch.Generator().manual_seed(seed))[0]


def balanced_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` examples, n / 10 of each of the 10 labels, drawn at random with ``seed``: the real clips a
    floor compares, in the proportions the generated ones have (the file's first n clips are not balanced)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return torch.cat([order[labels[order] == d][: n // 10] for d in range(10)])


def rounded(report: dict) -> dict:
    return {k: round(v, 4) for k, v in report.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100, help="generated (and real) clips per row")
    p.add_argument("--sampler", default="ddim:25")
    p.add_argument("--audio-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--video-scales", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--output", default="benchmarks/results/sound_video.json")
    p.add_argument("--parts", nargs="+", choices=("sound", "video"), default=["sound", "video"],
                   help="measure only these (the other part of an existing --output is kept)")
    p.add_argument("--cache", default="runs/eval_sound_video", help="generated samples are kept here and reused")
    args = cli.parse_args(p, device=None, threads=True)
    sampler = SamplerSpec.parse(args.sampler, 1000)
    labels = balanced_labels(args.n)
    start = time.time()
    output = Path(args.output)
    result = json.loads(output.read_text()) if output.is_file() else {}
    result.update({"n": args.n, "sampler": args.sampler, "seed": 0})
    for part in args.parts:  # each part records the run that measured it
        began, load = time.time(), cli.load_average()
        result[part] = (sound_part if part == "sound" else video_part)(args, sampler, labels, start)
        result[f"{part}_run"] = {**cli.provenance(load), "wall_time_s": round(time.time() - began, 1)}
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {output} in {time.time() - start:.0f} s", flush=True)


def sound_part(args, sampler, labels, start) -> dict:
    """The sound model's rows: the real floor, then each guidance scale."""
    judge = load_checkpoint(CHECKPOINTS / "spoken_digits_classifier")
    heldout_audio, heldout_digits = load_spoken_digits("test")
    heldout = spectrogram_images(heldout_audio)
    reference = classifier_features(judge, heldout)
    train_waves, train_digits = load_spoken_digits("train")
    pick = balanced_subset(train_digits, args.n)
    floor = digit_report(judge, heldout, heldout_digits, reference)
    as_generated = digit_report(judge, spectrogram_images(train_waves[pick]), train_digits[pick], reference)
    sound = {"real": {"label_accuracy": round(floor["label_accuracy"], 4), "fd_floor": round(as_generated["fd"], 4),
                      "diversity": round(as_generated["diversity"], 4),
                      "what": f"accuracy on the 500 held-out clips; FD and diversity of {args.n} training clips, "
                              "as many of each digit, drawn at random (seed 0), vs the held-out"}}
    model = load_diffusion_model(CHECKPOINTS / "spoken_digits_ddpm")
    for scale in args.audio_scales:
        images = sample_digits(model, labels, sampler=sampler, guidance=scale, progress=False,
                               cache_dir=Path(args.cache) / "sound")
        report = rounded(digit_report(judge, images, labels, reference))
        report["accuracy_ratio"] = round(report["label_accuracy"] / floor["label_accuracy"], 4)
        sound[f"guidance {scale:g}"] = report
        print(f"sound, guidance {scale:g}: {report}  ({time.time() - start:.0f} s)", flush=True)
    return sound


def video_part(args, sampler, labels, start) -> dict:
    """Real clips, then the video model and the per-frame baseline at each guidance scale."""
    judge = load_checkpoint(CHECKPOINTS / "moving_frames_classifier")
    reference = classifier_features(judge, real_frames())
    clips, digits = real_video(args.n)
    result_video = {"real": rounded(video.temporal_report(judge, clips, digits, reference))}
    print(f"video, real clips: {result_video['real']}", flush=True)
    video_model = load_diffusion_model(CHECKPOINTS / "moving_digits_ddpm")
    frame_model = load_diffusion_model(CHECKPOINTS / "moving_frames_ddpm")
    for scale in args.video_scales:
        clips = sample_digits(video_model, labels, sampler=sampler, guidance=scale, progress=False, batch_size=25,
                              cache_dir=Path(args.cache) / "video")
        result_video[f"video model, guidance {scale:g}"] = rounded(video.temporal_report(judge, clips, labels, reference))
        baseline = video.frame_by_frame(frame_model, labels, 12, sampler=sampler, guidance=scale,
                                        cache_dir=Path(args.cache) / "frames")
        result_video[f"per-frame baseline, guidance {scale:g}"] = rounded(
            video.temporal_report(judge, baseline, labels, reference))
        for key in (f"video model, guidance {scale:g}", f"per-frame baseline, guidance {scale:g}"):
            print(f"{key}: {result_video[key]}  ({time.time() - start:.0f} s)", flush=True)
    return result_video


if __name__ == "__main__":
    main()
