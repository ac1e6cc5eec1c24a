"""Small tensor helpers shared by the whole package.

Two rules make ``tinydiff`` run unchanged on CPU, CUDA and Apple MPS:

1. New tensors are created on the device (and in the dtype) of the tensors
   they will be combined with -- never with a hard-coded ``"cuda"`` or
   ``float64``.
2. Schedule constants live on the CPU in float64 (exact enough for
   ``alpha_bar`` near 0) and are converted to the data's dtype *before* they
   move to the data's device (MPS has no float64).

Everything here is deliberately tiny; read it once and the rest of the
package follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _check_step(t: int, T: int) -> int:
    if not 0 <= t < T:
        raise ValueError(f"timestep t={t} is out of range: indices are 0-based, 0 <= t <= T-1 = {T - 1}")
    return t


def as_timesteps(t: Tensor | int, batch_size: int, T: int, device: torch.device) -> Tensor:
    """Validate 0-based timesteps and return them as a LongTensor of shape [B].

    ``t`` may be a Python int (used for the whole batch) or an integer tensor
    of shape [B]. Raises a ``ValueError`` that says what is wrong: a float
    tensor, a shape that does not match the batch, or an index outside
    ``0 .. T-1`` (for a CPU tensor or an int; on an accelerator the range is not read, so nothing waits for it).
    """
    if isinstance(t, bool):
        raise TypeError("t must be an integer timestep or a LongTensor of shape [B], not a bool")
    if isinstance(t, int):
        return torch.full((batch_size,), _check_step(t, T), dtype=torch.long, device=device)
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be an int or a LongTensor of shape [B], got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(
            f"t must hold integer timestep indices (torch.long), got dtype {t.dtype}; "
            "use t.long() if you meant indices, or convert a continuous time to an index first"
        )
    if t.ndim == 0:
        t = t.expand(batch_size)
    if t.ndim != 1 or t.shape[0] != batch_size:
        raise ValueError(
            f"t must have shape [B] = [{batch_size}] to match the batch of x, got shape {list(t.shape)}"
        )
    if t.device.type == "cpu" and t.numel() > 0:
        # Checked on the host's values only: reading a GPU tensor's min and max would make the host wait for the
        # device at every call (every training step, every guided step). There an index out of range fails in the
        # gather that uses it.
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= T:
            raise ValueError(
                f"timesteps out of range: got min {lo}, max {hi}, but indices are 0-based, 0 <= t <= T-1 = {T - 1}"
            )
    return t.to(device=device, dtype=torch.long)


def check_timesteps(t: Tensor | int, batch_size: int, T: int, device: torch.device) -> Tensor | int:
    """Like :func:`as_timesteps`, but a Python int stays an int (range-checked in Python, no tensor made).

    The closed forms of :mod:`tinydiff.diffusion` take ``t`` through this: a sampler's one step
    for the whole batch then costs no tensor work (and no GPU sync) beyond the arithmetic itself,
    because :func:`gather` turns an int step into plain numbers.
    """
    if isinstance(t, int) and not isinstance(t, bool):
        return _check_step(t, T)
    return as_timesteps(t, batch_size, T, device)


def gather(values: Tensor, t: Tensor | int, like: Tensor) -> Tensor | float:
    """Pick ``values[t]`` per batch element and shape it to broadcast against ``like``.

    Shapes: ``values`` [T] (a schedule constant, float64 on the CPU), ``t`` [B] long,
    ``like`` [B, *data] -> result [B, 1, ..., 1] in ``like``'s dtype and device.

    A sampler's step has one timestep for the whole batch: with ``t`` a Python int the
    result is the float64 number ``values[t]``, which broadcasts against any tensor
    with no copy, no kernel and no host-device transfer (the caller checks the range).
    """
    if isinstance(t, int):
        return float(values[t])
    # index_select, not values[t]: advanced indexing of large batches is ~1000x slower on a busy CPU.
    # The dtype changes first, on the CPU (MPS has no float64); the table [T] is small enough to copy at every call.
    picked = to_device(values.to(dtype=like.dtype), like.device).index_select(0, to_device(t, like.device))
    return picked.reshape(-1, *([1] * (like.ndim - 1)))


def to_device(x: Tensor, device: torch.device | str) -> Tensor:
    """``x`` on ``device``, without making the host wait for a CUDA device.

    A plain ``.to("cuda")`` of a CPU tensor copies from pageable memory and then waits until the
    device has finished everything queued before the copy (a stream synchronisation) -- at every
    training step, for the batch, the timesteps and the noise. Staged through pinned (page-locked)
    memory the copy is only queued, as a ``DataLoader(pin_memory=True)`` does; the staging buffer
    is not reused before the copy has run. Any other pair of devices: ``x.to(device)``.
    """
    device = torch.device(device)
    if x.device.type != "cpu" or device.type != "cuda":
        return x.to(device)
    staged = x.pin_memory()  # a fresh copy unless x is pinned already: then x's owner may change it, so wait
    return staged.to(device, non_blocking=staged is not x)


def randn(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Standard normal noise of ``shape`` on ``device``.

    If ``generator`` lives on another device (say a CPU generator while the
    model runs on CUDA or MPS), the noise is drawn on the generator's device
    and moved: the same seed then gives the same numbers on every device.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    if generator is None or generator.device.type == device.type:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return to_device(torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype), device)


def device_and_dtype(model: object, default: Tensor | None = None) -> tuple[torch.device, torch.dtype]:
    """The device and dtype to sample on: ``default``'s if given, else the model's parameters', else CPU float32."""
    if default is not None:
        return default.device, default.dtype
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()
