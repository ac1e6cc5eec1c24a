"""How much time ``ddim_sample`` spends outside the network, measured against diffusers' DDIM loop.

Run from the repository root on an otherwise idle machine (needs ``pip install diffusers``;
nothing else in tinydiff does):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/sampler_overhead.py

Two cases, each with the *same* network, schedule and starting noise on both sides:

- ``mlp``: DDIM-50 on 2,000 points with the 2-D MLP of notebooks 03-04 (``MLP()``, random
  weights: the time does not depend on them), epsilon-prediction, cosine schedule. The network
  is so small that what the sampler does around it weighs most.
- ``unet``: DDIM-50 on a batch of 16 digits with the shipped MNIST UNet (v-prediction), labels 0-9.

Our side is ``tinydiff.samplers.ddim_sample(..., eta=0, spacing="leading")``; diffusers' side is
the loop its pipelines run, ``for t in scheduler.timesteps: x = scheduler.step(net(x, t), t, x).prev_sample``,
with ``DDIMScheduler(trained_betas=<our betas>, set_alpha_to_one=True, clip_sample=False,
timestep_spacing="leading")``: the same 50 timesteps and the same update, so the two
results agree to float round-off (checked, and printed). Runs alternate, ours then theirs,
``--repeats`` times; the medians give the ratio. The network is wrapped in a timer, so each run also
says how long it spent inside the 50 network calls; the rest is that sampler's own overhead. Note
that the ratio of total times cannot fall below (network time) / (diffusers' total): when the
network dominates, the overheads are the numbers to compare.

Writes ``benchmarks/results/sampler_overhead.json`` (command, machine, load averages, the
tinydiff commit or tree it measured, and every number). ``--tag`` names the run in that file, so
one file holds the measurement before and after a change (run the script from the old tree with
``PYTHONPATH=<old tree>`` for "before").
"""

from __future__ import annotations

from tinydiff import cli  # first: OMP_WAIT_POLICY before torch starts OpenMP

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

import tinydiff
from tinydiff import schedules
from tinydiff.guidance import conditional
from tinydiff.models import MLP
from tinydiff.pretrained import load_diffusion_model
from tinydiff.samplers import ddim_sample

ROOT = Path(__file__).resolve().parents[1]
STEPS = 50


def diffusers_ddim(net, betas: torch.Tensor, x_T: torch.Tensor, prediction: str) -> torch.Tensor:
    """DDIM-50 with diffusers' DDIMScheduler.step, as its pipelines loop over it."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=betas.numel(), trained_betas=betas.numpy(), clip_sample=False,
                              set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                              prediction_type={"epsilon": "epsilon", "v": "v_prediction"}[prediction])
    scheduler.set_timesteps(STEPS)
    x = x_T
    for t in scheduler.timesteps:
        output = net(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        x = scheduler.step(output, t, x, eta=0.0).prev_sample
    return x


class Timed(torch.nn.Module):
    """The network, with a stopwatch around every call (an nn.Module, so samplers still see its device)."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net
        self.seconds = 0.0

    def forward(self, x, t):
        start = time.perf_counter()
        out = self.net(x, t)
        self.seconds += time.perf_counter() - start
        return out


@torch.no_grad()
def measure(name: str, net, schedule, x_T: torch.Tensor, prediction: str, repeats: int) -> dict:
    ours_x = ddim_sample(net, schedule, x_T.shape, steps=STEPS, x_T=x_T, prediction=prediction, progress=False)
    theirs_x = diffusers_ddim(net, schedule.betas, x_T, prediction)
    agreement = float((ours_x - theirs_x).abs().max())
    timed = Timed(net)
    times = {"tinydiff": [], "diffusers": []}
    inside = {"tinydiff": [], "diffusers": []}
    runs = {
        "tinydiff": lambda: ddim_sample(timed, schedule, x_T.shape, steps=STEPS, x_T=x_T, prediction=prediction, progress=False),
        "diffusers": lambda: diffusers_ddim(timed, schedule.betas, x_T, prediction),
    }
    for _ in range(repeats):
        for key, fn in runs.items():
            timed.seconds = 0.0
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
            inside[key].append(timed.seconds)
    med = {key: statistics.median(v) for key, v in times.items()}
    overhead = {key: statistics.median(a - b for a, b in zip(times[key], inside[key])) for key in times}
    result = {
        "case": name, "batch": x_T.shape[0], "steps": STEPS, "repeats": repeats,
        "max_abs_difference": agreement,
        "median_s": {k: round(v, 5) for k, v in med.items()},
        "median_network_s": {k: round(statistics.median(v), 5) for k, v in inside.items()},
        "overhead_ms": {k: round(1000 * v, 2) for k, v in overhead.items()},
        "ratio_tinydiff_to_diffusers": round(med["tinydiff"] / med["diffusers"], 3),
        "overhead_ratio": round(overhead["tinydiff"] / overhead["diffusers"], 3),
    }
    print(f"{name:5s} batch {x_T.shape[0]:5d}: tinydiff {1000 * med['tinydiff']:8.1f} ms (overhead "
          f"{1000 * overhead['tinydiff']:6.1f} ms), diffusers {1000 * med['diffusers']:8.1f} ms (overhead "
          f"{1000 * overhead['diffusers']:6.1f} ms) -> ratio {result['ratio_tinydiff_to_diffusers']:.3f}, overhead ratio "
          f"{result['overhead_ratio']:.2f} (samples agree to {agreement:.1e})", flush=True)
    return result


def tree_id() -> str:
    """The git commit of the tinydiff being measured (+ "-dirty" if its tree has changes)."""
    where = Path(tinydiff.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "tinydiff"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(where)
    return commit + ("-dirty" if dirty else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--unet-repeats", type=int, default=5)
    p.add_argument("--tag", default="after", help="the name of this run in the results file (e.g. before / after)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/sampler_overhead.json"))
    args = cli.parse_args(p, device=None, threads=True)  # the CPU: diffusers' loop runs there

    torch.manual_seed(0)
    mlp_schedule = schedules.get("cosine", T=1000)
    mlp = MLP().eval()
    x_mlp = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))

    model = load_diffusion_model(ROOT / "data/checkpoints/mnist_ddpm")
    y = torch.arange(16) % 10
    unet = conditional(model.net, y)
    x_unet = torch.randn(16, *model.sample_shape, generator=torch.Generator().manual_seed(0))

    print(f"tinydiff from {tree_id()}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    load_before = cli.load_average()
    results = [measure("mlp", mlp, mlp_schedule, x_mlp, "epsilon", args.repeats),
               measure("unet", unet, model.schedule, x_unet, model.prediction, args.unet_repeats)]
    import diffusers

    run = {"tinydiff": tree_id(), "diffusers": diffusers.__version__, **cli.provenance(load_before),
           "threads": torch.get_num_threads(), "results": results}
    out = Path(args.out)
    stored = json.loads(out.read_text()) if out.is_file() else {}
    stored[args.tag] = run
    out.write_text(json.dumps(stored, indent=2) + "\n")
    print(f"wrote {out} [{args.tag}]")


if __name__ == "__main__":
    main()
