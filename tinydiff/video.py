"""Measuring generated video: is it one digit, moving like one? (Part 15, notebook 17.)

A video model must draw good frames *and* tie them together -- temporal consistency, the open problem of video
generation. For moving digits the data say exactly what consistency means (:mod:`tinydiff.data.moving`): the same
digit in every frame, the same ink, and a centre that moves in a straight line between bounces. Each is measured
here on clips [B, T, 1, H, W] in [-1, 1]:

- :func:`frame_labels`: a digit classifier on every frame, [B, T]; :func:`temporal_report` counts the clips whose
  every frame is read as the requested digit.
- :func:`ink`: the ink of each frame, sum of (x + 1) / 2, [B, T]; its spread over a clip (std / mean) is 0 for a
  real clip, whose digit is always whole and never changes.
- :func:`identity_drift`: how far the classifier's features move from one frame to the next, as a fraction of how
  far apart two *different* clips of the same digit are: 0 if every frame were the same picture, about 1 if each
  frame were a fresh drawing of the digit. (Real clips are not at 0: the features change a little as a digit moves.)
- :func:`centres`: the centre of the ink, [B, T, 2] (row, column); :func:`acceleration` its second difference
  c_{k+1} - 2 c_k + c_{k-1}, [B, T - 2, 2]. In a real clip it is zero, up to the pixel rounding of the drawing
  (at most 1 px per axis), except at a bounce.

The baseline a video model is compared with is the image model run on every frame independently
(:func:`frame_by_frame`): each frame a good digit, nothing shared between frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .evaluation import sample_digits
from .metrics import classifier_features, classify, frechet_distance
from .pretrained import DiffusionModel
from .registry import SamplerSpec

SMOOTH_PX = 1.5
"""A step counts as smooth when the centre's acceleration is at most this many pixels (per axis, the largest): real
clips stay within 1 px (rounding) except at bounces."""


def _check_clips(clips: Tensor) -> Tensor:
    if not isinstance(clips, Tensor) or clips.ndim != 5 or clips.shape[2] != 1 or clips.shape[1] < 3:
        got = list(clips.shape) if isinstance(clips, Tensor) else type(clips).__name__
        raise ValueError(f"clips must be [B, T, 1, H, W] with at least 3 frames (an acceleration needs three), got {got}")
    return clips


def frame_by_frame(image_model: DiffusionModel, labels: Tensor, frames: int, *, sampler: SamplerSpec,
                   guidance: float = 1.0, seed: int = 0, progress: bool = False, cache_dir=None) -> Tensor:
    """The naive video: the image model samples each of ``frames`` frames of clip i on its own, all asking for
    ``labels[i]``, from independent noise. labels [B] -> clips [B, frames, C, H, W]. ``cache_dir``: as
    :func:`tinydiff.evaluation.sample_digits`."""
    images = sample_digits(image_model, labels.repeat_interleave(frames), sampler=sampler, guidance=guidance,
                           seed=seed, progress=progress, cache_dir=cache_dir)
    return images.reshape(len(labels), frames, *images.shape[1:])


def frame_labels(classifier: nn.Module, clips: Tensor) -> Tensor:
    """The classifier's digit for every frame: clips [B, T, 1, H, W] -> LongTensor [B, T]."""
    B, T = _check_clips(clips).shape[:2]
    return classify(classifier, clips.flatten(0, 1).clamp(-1, 1)).reshape(B, T)


def ink(clips: Tensor) -> Tensor:
    """The ink of every frame, sum over pixels of (x + 1) / 2: clips [B, T, 1, H, W] -> [B, T]."""
    return ((_check_clips(clips).clamp(-1, 1) + 1) / 2).sum((-3, -2, -1))


def centres(clips: Tensor) -> Tensor:
    """The centre of the ink of every frame, (row, column) in pixels: clips [B, T, 1, H, W] -> [B, T, 2]."""
    weight = (_check_clips(clips).clamp(-1, 1)[:, :, 0] + 1) / 2  # [B, T, H, W]
    H, W = weight.shape[-2:]
    rows = torch.arange(H, dtype=weight.dtype, device=weight.device)
    cols = torch.arange(W, dtype=weight.dtype, device=weight.device)
    mass = weight.sum((-2, -1)).clamp(min=1e-6)
    return torch.stack([(weight.sum(-1) * rows).sum(-1) / mass, (weight.sum(-2) * cols).sum(-1) / mass], -1)


def acceleration(centre: Tensor) -> Tensor:
    """The second difference of a trajectory: centres [B, T, 2] -> [B, T - 2, 2], c[k+1] - 2 c[k] + c[k-1]."""
    return centre[:, 2:] - 2 * centre[:, 1:-1] + centre[:, :-2]


def identity_drift(features: Tensor, labels: Tensor) -> float:
    """Mean frame-to-frame feature change over the mean distance between different clips of the same label at the
    same frame: features [B, T, F] (a classifier's, of every frame), labels [B] -> a number (0: one picture
    throughout; about 1: a new instance of the digit every frame). Needs two clips of some label."""
    step = (features[:, 1:] - features[:, :-1]).norm(dim=-1).mean()
    apart = []
    for label in labels.unique():
        group = features[labels == label]  # [n, T, F]
        if len(group) > 1:
            d = torch.cdist(group.transpose(0, 1), group.transpose(0, 1))  # [T, n, n]
            n = len(group)
            apart.append(d.sum((-2, -1)) / (n * (n - 1)))  # the mean over pairs i != j, per frame
    if not apart:
        raise ValueError("identity_drift needs at least two clips of one label to compare")
    return float(step / torch.cat(apart).mean())


def temporal_report(classifier: nn.Module, clips: Tensor, labels: Tensor, reference_features: Tensor) -> dict[str, float]:
    """How consistent clips [B, T, 1, H, W] asking for ``labels`` [B] are over time, and how good their frames are:

    - ``frame_accuracy``: frames read as the requested digit;
    - ``class_kept``: clips whose *every* frame is read as the requested digit;
    - ``one_digit``: clips whose every frame is read as the same digit, whichever;
    - ``ink_spread``: the mean over clips of std / mean of the ink over the frames (0 for real clips);
    - ``identity_drift``: :func:`identity_drift` of the classifier's features;
    - ``smooth_steps``: interior frames where the centre's acceleration is at most :data:`SMOOTH_PX` per axis;
    - ``median_acceleration``: the median of its size (largest axis), in pixels;
    - ``frame_fd``: FD against ``reference_features`` (real frames') of frame k of every clip, averaged over k: each
      FD compares B independent frames, as an image FD would (pooling all frames would count a clip's frames,
      which are alike by design, as independent samples).
    """
    read = frame_labels(classifier, clips).cpu()
    labels = labels.cpu()
    amount = ink(clips)
    accel = acceleration(centres(clips)).abs().amax(-1)
    feats = classifier_features(classifier, clips.flatten(0, 1).clamp(-1, 1))
    return {
        "frame_accuracy": float((read == labels[:, None]).float().mean()),
        "class_kept": float((read == labels[:, None]).all(1).float().mean()),
        "one_digit": float((read == read[:, :1]).all(1).float().mean()),
        "identity_drift": identity_drift(feats.reshape(*clips.shape[:2], -1).cpu(), labels),
        "ink_spread": float((amount.std(1) / amount.mean(1).clamp(min=1e-6)).mean()),
        "smooth_steps": float((accel <= SMOOTH_PX).float().mean()),
        "median_acceleration": float(accel.median()),
        "frame_fd": sum(frechet_distance(f, reference_features) for f in feats.reshape(*clips.shape[:2], -1).unbind(1))
        / clips.shape[1],
    }
