"""DDIM-50 sampling speed of the two shipped MNIST models on this CPU: batch size, bfloat16, channels-last,
torch.compile, the share of time in the network, and how close each setting gets to the machine's limit.

Run from the repository root, one job at a time (about 15 minutes on 2 cores):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/speed.py | tee benchmarks/results/speed.log

For the pixel model (``data/checkpoints/mnist_ddpm``) and the latent model (``data/checkpoints/mnist_latent`` +
its autoencoder), both class-conditional at their recommended guidance scale (1.5: every network call runs the
batch twice, conditional and null label), in one process and with ``--threads`` threads, it measures:

- **images/s** of DDIM-50 (eta = 0, leading spacing, x0 clipped to [-1, 1] for pixels -- what
  ``scripts/sample.py`` runs) at batch sizes 1, 16, 64, 100 (the scripts' and notebook 08's batch) and 256, for
  each setting of :data:`SETTINGS`: float32 (what the scripts and notebooks do today), channels-last, bfloat16
  autocast, and ``torch.compile`` at ``--compile-batches`` (its first call, tracing and compiling, is reported
  apart as compile time; the inductor cache starts empty; a compiled network runs only the batch it was compiled
  for). Decoding the latents is included, by the autoencoder's decoder arranged as
  the setting says (precision, memory order, compiled or not). A cell whose 50 steps would take more
  than ``--cell-seconds`` times only the first k steps of the same loop and scales by 50 / k (every DDIM step
  costs the same: one network call on the same shapes); ``steps_timed`` says which. The machine's speed drifts
  (other jobs, other virtual machines): every cell is timed in ``--rounds`` rounds over all cells of a model,
  and its fastest round counts.
- **network share**: the network calls alone (with the guidance that combines their two halves), replayed on
  the very inputs the sampler gave them, against the whole loop of the same round (median over rounds); the rest
  is the sampler (DDIM update, clipping) and decoding.
- **the limit**: the network's FLOPs per call (``torch.utils.flop_counter.FlopCounterMode``: convolutions and
  matrix products) times the 50 calls, divided by the peak matrix-product rate torch reaches here (best of
  square float32 and bfloat16 matmuls of 512-4096), as images/s; each setting's fraction of the limit of its
  arithmetic (float32 or bfloat16).
- **FD** (the measure of the other benchmarks: :func:`tinydiff.evaluation.digit_report`, classifier features
  against the 1,000 test digits) of float32, bfloat16 autocast and the model's fastest setting, each from the
  same starting noises (batch b seeded as :func:`tinydiff.evaluation.sample_digits` seeds it), for two seeds:
  the spread between the seeds is the FD's noise at that sample size.

Writes ``benchmarks/results/speed.json`` (command, machine, CPU flags, load averages, every number).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared CPU
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="speed_inductor_"))  # cold compiles

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tinydiff.checkpoint import load_checkpoint, read_config  # noqa: E402
from tinydiff.data import load_mnist  # noqa: E402
from tinydiff.evaluation import balanced_labels, command_line, digit_report, machine, sample_digits  # noqa: E402
from tinydiff.guidance import classifier_free  # noqa: E402
from tinydiff.metrics import classifier_features  # noqa: E402
from tinydiff.pretrained import DiffusionModel, load_diffusion_model  # noqa: E402
from tinydiff.registry import SamplerSpec  # noqa: E402
from tinydiff.samplers import ddim_timesteps, ddim_update  # noqa: E402
from tinydiff.tensors import randn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"latent": "mnist_latent", "pixel": "mnist_ddpm"}
STEPS = 50
SPACING = "leading"  # ddim:50, the scripts' default


@dataclass(frozen=True)
class Setting:
    """How the network runs: memory order, bfloat16 (``autocast``, or ``weights``: the whole network cast), compiled."""

    name: str
    channels_last: bool = False
    bf16: str | None = None
    compile: bool = False

    @property
    def arithmetic(self) -> str:
        return "bf16" if self.bf16 else "fp32"


SETTINGS = {s.name: s for s in (
    Setting("fp32"),  # today's default: load_diffusion_model's network as it is
    Setting("fp32 channels-last", channels_last=True),
    Setting("bf16 autocast", bf16="autocast"),
    Setting("bf16 autocast channels-last", channels_last=True, bf16="autocast"),
    Setting("fp32 compile", compile=True),
    Setting("bf16 autocast compile", bf16="autocast", compile=True),
    Setting("bf16 weights compile", bf16="weights", compile=True),
)}


class Precision(nn.Module):
    """``model(x, *rest)`` run in bfloat16 -- under autocast, or on bf16 inputs for a bf16 module -- with the
    output cast back to x's dtype, so the sampler's own arithmetic stays in float32."""

    def __init__(self, model: nn.Module, bf16: str | None) -> None:
        super().__init__()
        self.model, self.bf16 = model, bf16

    def forward(self, x: Tensor, *rest: Tensor) -> Tensor:
        if self.bf16 == "autocast":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self.model(x, *rest).to(x.dtype)
        if self.bf16 == "weights":
            return self.model(x.to(torch.bfloat16), *rest).to(x.dtype)
        return self.model(x, *rest)


class Decoder(nn.Module):
    """A latent model's decoding, x = D(z / scale_factor) (:meth:`tinydiff.latent.LatentCodec.decode`), as a
    module of its own that a setting can arrange and compile: z [B, *latent_shape] -> images [B, C, H, W]."""

    def __init__(self, model: DiffusionModel) -> None:
        super().__init__()
        self.decoder, self.scale_factor = model.codec.autoencoder.decoder, model.codec.scale_factor

    def forward(self, z: Tensor) -> Tensor:
        return self.decoder(z / self.scale_factor)


class Recorder(nn.Module):
    """The model, keeping a copy of every input it is called with (for replaying the network calls alone)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        self.inputs.append((x_t.clone(), t.clone()))
        return self.model(x_t, t)


def arranged(module: nn.Module, setting: Setting) -> nn.Module:
    """A copy of ``module`` arranged as ``setting`` says (compiled lazily: the first call compiles)."""
    module = copy.deepcopy(module).eval().requires_grad_(False)
    if setting.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if setting.bf16 == "weights":
        module = module.to(torch.bfloat16)
    return torch.compile(module, dynamic=False) if setting.compile else module


def network_for(model: DiffusionModel, setting: Setting) -> tuple[nn.Module, nn.Module]:
    """The model's network, and its decoding (the identity for a pixel model), both arranged as ``setting`` says;
    the decoder also runs in the setting's precision (the network's precision is applied per call, with its guidance)."""
    decode = Precision(arranged(Decoder(model), setting), setting.bf16) if model.codec is not None else nn.Identity()
    return arranged(model.net, setting), decode


def starting_noise(model: DiffusionModel, batch: int, start: int, seed: int) -> Tensor:
    """x_T for the labels ``start .. start + batch``, drawn exactly as :func:`tinydiff.evaluation.sample_digits` draws it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
    return randn((batch, *model.sample_shape), generator=generator)


def no_noise() -> Tensor:
    raise AssertionError("DDIM with eta = 0 draws no noise after x_T")


@torch.no_grad()
def ddim_loop(model: DiffusionModel, guided: nn.Module, x: Tensor, steps_timed: int = STEPS) -> Tensor:
    """The first ``steps_timed`` steps of DDIM-50 from x_T = x: the update and loop of ``ddim_sample``."""
    timesteps = ddim_timesteps(model.schedule.T, STEPS, SPACING).tolist()
    update = ddim_update(guided, model.schedule, timesteps, 0.0, no_noise, model.prediction, model.clip_x0)
    for i in range(steps_timed):
        x, _ = update(i, x)
    return x


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


@torch.no_grad()
def check_loop(model: DiffusionModel, scale: float) -> float:
    """The benchmark's loop against ``sample_digits`` with ``ddim:50`` (what scripts/sample.py runs): max |difference|."""
    labels = balanced_labels(2)
    reference = sample_digits(model, labels, sampler=SamplerSpec.parse(f"ddim:{STEPS}", model.schedule.T),
                              guidance=scale, seed=0, batch_size=2, progress=False)
    _, decode = network_for(model, SETTINGS["fp32"])
    ours = decode(ddim_loop(model, classifier_free(model.net, labels, scale), starting_noise(model, 2, 0, 0)))
    return float((ours - reference).abs().max())


def peak_matmul(peaks: dict[str, dict[int, float]], sizes=(512, 1024, 2048, 4096), repeats: int = 3) -> None:
    """GFLOP/s of square float32 and bfloat16 matrix products (2 n^3 FLOPs each), best of ``repeats``, into
    ``peaks[arithmetic][n]`` where faster than what is there (the benchmark measures it in every round)."""
    generator = torch.Generator().manual_seed(0)
    for arithmetic, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for n in sizes:
            a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
            a @ b
            rate = 2 * n**3 / min(timed(torch.mm, a, b)[0] for _ in range(repeats)) / 1e9
            peaks.setdefault(arithmetic, {})[n] = max(rate, peaks.get(arithmetic, {}).get(n, 0.0))


@torch.no_grad()
def flops_per_call(model: DiffusionModel, batch: int, scale: float) -> int:
    """FLOPs of one guided network call on ``batch`` samples (2 * batch through the network at scale != 1)."""
    guided = classifier_free(model.net, balanced_labels(batch), scale)
    counter = FlopCounterMode(display=False)
    with counter:
        guided(starting_noise(model, batch, 0, 0), torch.full((batch,), 500))
    return counter.get_total_flops()


@dataclass
class Cell:
    """One (setting, batch) of a model: its guided model and starting noise, and the times of every round."""

    setting: Setting
    batch: int
    guided: nn.Module
    decode: nn.Module
    network_batch: int  # 2 * batch under guidance: the conditional and the null label
    x_T: Tensor
    first_call_s: float
    decode_first_call_s: float
    steps_timed: int
    replayed: int
    loop_s: list[float] = field(default_factory=list)  # steps_timed steps of the sampler, per round
    call_s: list[float] = field(default_factory=list)  # one network call replayed alone (mean of `replayed`), per round
    decode_s: list[float] = field(default_factory=list)


@torch.no_grad()
def prepare(model: DiffusionModel, modules: tuple[nn.Module, nn.Module], setting: Setting, batch: int, scale: float,
            cell_seconds: float) -> Cell:
    """The cell's guided model, after one call (for a compiled network: tracing and compiling, timed) and a probe
    that sets how many of the 50 steps a round times: all of them if they take at most ``cell_seconds``."""
    net, decode = modules
    guided = Precision(classifier_free(net, balanced_labels(batch), scale), setting.bf16)
    x_T = starting_noise(model, batch, 0, 0)
    t = torch.full((batch,), model.schedule.T - 1)
    first_s, _ = timed(guided, x_T, t)
    decode_first_s, _ = timed(decode, x_T)
    call_s = min(timed(guided, x_T, t)[0] for _ in range(2))
    steps_timed = STEPS if STEPS * call_s <= cell_seconds else max(3, int(cell_seconds / call_s))
    replayed = min(steps_timed, 10, max(2, int(cell_seconds / 3 / call_s)))
    network_batch = batch if scale in (0.0, 1.0) else 2 * batch
    return Cell(setting, batch, guided, decode, network_batch, x_T, first_s, decode_first_s, steps_timed, replayed)


@torch.no_grad()
def time_round(model: DiffusionModel, cell: Cell) -> None:
    """One round of a cell: the first ``steps_timed`` steps of DDIM-50, then ``replayed`` of the network calls
    those steps made, evenly spread, alone on the very same inputs, then decoding (latent models)."""
    recorder = Recorder(cell.guided)
    seconds, x = timed(ddim_loop, model, recorder, cell.x_T, cell.steps_timed)
    cell.loop_s.append(seconds)
    picks = torch.linspace(0, cell.steps_timed - 1, cell.replayed).round().long().tolist()
    start = time.perf_counter()
    for i in picks:
        cell.guided(*recorder.inputs[i])
    cell.call_s.append((time.perf_counter() - start) / len(picks))
    cell.decode_s.append(timed(cell.decode, x)[0])


def summary(cell: Cell) -> dict:
    """Images/s of DDIM-50 from the best round; the shares of the network (replayed alone), sampler and decoder."""
    step = min(cell.loop_s) / cell.steps_timed
    call, decode = min(cell.call_s), min(cell.decode_s)
    total = STEPS * step + decode
    # the network's share from each round's own pair (loop, replay: seconds apart), the median over rounds
    network = statistics.median(c * cell.steps_timed / loop for c, loop in zip(cell.call_s, cell.loop_s))
    network *= STEPS * step / total
    return {
        "setting": cell.setting.name, "batch": cell.batch, "network_batch": cell.network_batch,
        "steps_timed": cell.steps_timed, "calls_replayed": cell.replayed, "rounds": len(cell.loop_s),
        "first_call_s": round(cell.first_call_s, 3), "decode_first_call_s": round(cell.decode_first_call_s, 3),
        "seconds": round(total, 4), "images_per_s": round(cell.batch / total, 3),
        "round_spread": round(max(cell.loop_s) / min(cell.loop_s), 3),  # slowest / fastest round: the machine's noise
        "network_s_per_call": round(call, 5),
        "network_share": round(network, 4),
        "sampler_share": round(1 - network - decode / total, 4),
        "decode_share": round(decode / total, 4),
    }


@torch.no_grad()
def draw(model: DiffusionModel, modules: tuple[nn.Module, nn.Module], setting: Setting, labels: Tensor, scale: float,
         batch: int, seed: int) -> Tensor:
    """Images for ``labels`` with DDIM-50 under ``setting``, from the starting noises of ``sample_digits``."""
    net, decode = modules
    out = []
    for start in range(0, len(labels), batch):
        y = labels[start : start + batch]
        guided = Precision(classifier_free(net, y, scale), setting.bf16)
        out.append(decode(ddim_loop(model, guided, starting_noise(model, len(y), start, seed))))
    return torch.cat(out)


@torch.no_grad()
def fd_comparison(model: DiffusionModel, nets: dict[str, tuple[nn.Module, nn.Module]], settings: dict, scale: float, batch: int, n: int,
                  seeds: list[int], reference: tuple) -> dict:
    """FD, accuracy and diversity of ``n`` digits under each setting (the first one the reference), per seed, from
    the same starting noises; how far each setting's images are from the reference's; the seeds' FD spread."""
    clf, f_test, x_train, y_train = reference
    labels = balanced_labels(n)
    real = digit_report(clf, x_train[:n], y_train[:n], f_test)
    rows, first = [], {}
    for name in settings:
        modules = nets[name] if name in nets else network_for(model, SETTINGS[name])
        for seed in seeds:
            seconds, x = timed(draw, model, modules, SETTINGS[name], labels, scale, batch, seed)
            report = digit_report(clf, x, labels, f_test)
            same = first.setdefault(seed, x)
            rows.append({"setting": name, "seed": seed, **{k: round(v, 4) for k, v in report.items()},
                         "max_abs_difference_to_reference": round(float((x - same).abs().max()), 4),
                         "mean_abs_difference_to_reference": round(float((x - same).abs().mean()), 5),
                         "seconds": round(seconds, 1)})
            print(f"FD {name:24s} seed {seed}: {report['fd']:.4f}, accuracy {report['label_accuracy']:.3f} "
                  f"(mean |x - x_{next(iter(settings))}| {rows[-1]['mean_abs_difference_to_reference']:.4f}; "
                  f"{seconds:.0f} s)", flush=True)
    mean = {name: sum(r["fd"] for r in rows if r["setting"] == name) / len(seeds) for name in settings}
    reference_fds = [r["fd"] for r in rows if r["setting"] == next(iter(settings))]
    result = {"batch": batch, "n": n, "seeds": seeds, "real_fd": round(real["fd"], 4), "rows": rows,
              "reference": next(iter(settings)), "reference_seed_spread": round(max(reference_fds) - min(reference_fds), 4),
              "mean_change": {name: round(mean[name] - mean[next(iter(settings))], 4) for name in list(settings)[1:]}}
    print(f"FD noise ({result['reference']}, seeds {seeds}): spread {result['reference_seed_spread']:.4f}; mean change: "
          f"{result['mean_change']}; real digits (n = {n}): {real['fd']:.4f}", flush=True)
    return result


def cpu_flags() -> dict:
    """The CPU's bfloat16-related flags (/proc/cpuinfo) and the vector ISA torch dispatches to."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next(line.split(":", 1)[1].split() for line in info if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = []
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    return {**{f: f in flags for f in wanted}, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["latent", "pixel"], choices=list(MODELS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 100, 256])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--compile-batches", nargs="+", default=["latent:256", "latent:512", "pixel:256"],
                   help="model:batch at which the compiled settings run (each batch size compiles anew)")
    p.add_argument("--default-batch", type=int, default=100, help="today's batch: scripts/sample.py, notebook 08")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all cells of a model; each cell's best counts")
    p.add_argument("--cell-seconds", type=float, default=3.0, help="about this many seconds of steps per cell and round")
    p.add_argument("--fd", nargs="*", default=["latent:512:1024", "pixel:64:128"],
                   help="model:batch:n for the FD comparison (n a multiple of batch); none to skip")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/speed.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    print(f"command: {command_line()}\ndate: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
          f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\nmachine: {machine()}\n"
          f"cpu flags: {cpu_flags()}", flush=True)
    load_before = list(os.getloadavg())

    clf = load_checkpoint(ROOT / "data/checkpoints/mnist_classifier")
    x_test, _ = load_mnist("test", pad_to_32=True)
    f_test = classifier_features(clf, x_test)
    x_train, y_train = load_mnist("train", pad_to_32=True)
    compile_batches = [(m, int(b)) for m, b in (spec.split(":") for spec in args.compile_batches)]
    fd_plan = {m: (int(b), int(n)) for m, b, n in (spec.split(":") for spec in args.fd)}

    peaks: dict[str, dict[int, float]] = {}
    results, flops = {}, {}
    for name in args.models:
        path = ROOT / "data/checkpoints" / MODELS[name]
        model = load_diffusion_model(path)
        scale = model.recommended_guidance or 1.0
        difference = check_loop(model, scale)
        assert difference < 1e-5, f"the benchmark's DDIM loop differs from sample_digits by {difference}"
        print(f"\n== {name}: {path.name}, guidance {scale:g}, sample {list(model.sample_shape)}; the loop matches "
              f"sample_digits to {difference:.1e}", flush=True)
        nets, cells, failed = {}, [], []
        for setting in (SETTINGS[s] for s in args.settings):
            nets[setting.name] = network_for(model, setting)
            batches = [b for m, b in compile_batches if m == name] if setting.compile else args.batches
            if setting.compile and setting.bf16 is None:
                batches = batches[:1]  # compiled float32 at the first compile batch only: a compile costs 15-50 s
            for batch in batches:
                try:
                    cells.append(prepare(model, nets[setting.name], setting, batch, scale, args.cell_seconds))
                except Exception as err:  # a compiler that fails here is a result, not a crash
                    failed.append({"setting": setting.name, "batch": batch, "error": f"{type(err).__name__}: {err}"[:3000]})
                    print(f"{setting.name} at batch {batch} FAILED: {failed[-1]['error'][:500]}", flush=True)
                    continue
                if setting.compile:
                    print(f"{setting.name} at batch {batch}: first call (compiling) {cells[-1].first_call_s:.1f} s, "
                          f"decoder {cells[-1].decode_first_call_s:.1f} s", flush=True)
        for r in range(args.rounds):
            peak_matmul(peaks)
            for cell in sorted(cells, key=lambda c: c.batch):
                time_round(model, cell)
            print(f"round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", flush=True)
        rows = [summary(cell) for cell in cells]
        for row in rows:
            print(f"{row['setting']:28s} batch {row['batch']:4d}: {row['images_per_s']:8.2f} images/s "
                  f"({row['steps_timed']} steps timed, rounds differ by {row['round_spread']:.2f}x), network "
                  f"{100 * row['network_share']:.1f} %, sampler {100 * row['sampler_share']:.1f} %, "
                  f"decode {100 * row['decode_share']:.1f} %", flush=True)
        flops[name] = {b: flops_per_call(model, b, scale) for b in sorted({row["batch"] for row in rows})}
        default = next(r for r in rows if r["setting"] == "fp32" and r["batch"] == args.default_batch)
        best = max(rows, key=lambda r: r["images_per_s"])
        result = {"checkpoint": os.path.relpath(path, ROOT), "sha256": read_config(path)["sha256"], "guidance": scale,
                  "cells": rows, "failed": failed, "default": {"setting": "fp32", "batch": args.default_batch},
                  "best": {"setting": best["setting"], "batch": best["batch"]},
                  "speedup_best_over_default": round(best["images_per_s"] / default["images_per_s"], 2)}
        print(f"{name}: best {best['setting']} at batch {best['batch']}, {best['images_per_s']:.1f} images/s = "
              f"{result['speedup_best_over_default']}x today's default (fp32, batch {args.default_batch}, "
              f"{default['images_per_s']:.1f} images/s)", flush=True)
        if name in fd_plan:
            batch, n = fd_plan[name]
            fd_settings = ["fp32", "bf16 autocast"] + ([best["setting"]] if best["batch"] == batch else [])
            result["fd"] = fd_comparison(model, nets, dict.fromkeys(fd_settings), scale, batch, n, args.seeds,
                                         (clf, f_test, x_train, y_train))
        results[name] = result

    peak = {a: {"gflops_by_size": {str(n): round(r, 1) for n, r in by_size.items()},
                "gflops": round(max(by_size.values()), 1)} for a, by_size in peaks.items()}
    print(f"\npeak matmul, {args.threads} threads, best of all rounds: fp32 {peak['fp32']['gflops']:.0f} GFLOP/s "
          f"{peak['fp32']['gflops_by_size']}, bf16 {peak['bf16']['gflops']:.0f} GFLOP/s {peak['bf16']['gflops_by_size']}")
    for name, result in results.items():
        for row in result["cells"]:
            gflop_per_image = flops[name][row["batch"]] * STEPS / row["batch"] / 1e9
            arithmetic = SETTINGS[row["setting"]].arithmetic
            limit = peak[arithmetic]["gflops"] / gflop_per_image
            row.update(gflop_per_call=round(flops[name][row["batch"]] / 1e9, 4), gflop_per_image=round(gflop_per_image, 4),
                       limit_images_per_s=round(limit, 1), fraction_of_limit=round(row["images_per_s"] / limit, 4))
            print(f"{name:6s} {row['setting']:28s} batch {row['batch']:4d}: {gflop_per_image:.3f} GFLOP per image, "
                  f"{arithmetic} limit {limit:7.1f} images/s, reached {100 * row['fraction_of_limit']:5.1f} %")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": command_line(), "machine": machine(), "cpu_flags": cpu_flags(), "threads": args.threads,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "wall_s": round(time.time() - started, 1),
              "sampler": f"DDIM-{STEPS} {SPACING}, eta 0", "rounds": args.rounds, "peak_matmul": peak,
              "models": results}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out} ({record['wall_s']:.0f} s; load average {' '.join(map(str, record['load_average_after']))})")


if __name__ == "__main__":
    main()
