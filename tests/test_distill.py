"""tinydiff.distill against closed forms: on Gaussian data the exact denoiser is linear, so the teacher's two DDIM
steps can be written out by hand; the student's target must make one DDIM step land exactly where they do."""

import math

import pytest
import torch

from tinydiff import schedules
from tinydiff.data import GaussianMixture
from tinydiff.distill import Distillation, distillation_target, halving_grids
from tinydiff.models import MLP
from tinydiff.oracle import MixtureEpsilon
from tinydiff.samplers import ddim_sample
from tinydiff.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, VAR = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.3


def exact_x0(z: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """E[x_0 | z_t] for x_0 ~ N(MEAN, VAR I): MEAN + a VAR / (a^2 VAR + 1 - a^2) (z - a MEAN), a = sqrt(alpha_bar)."""
    a = math.sqrt(alpha_bar)
    return MEAN + a * VAR / (a * a * VAR + 1 - a * a) * (z - a * MEAN)


def hand_ddim(z: torch.Tensor, alpha_bar: float, alpha_bar_to: float) -> torch.Tensor:
    """One deterministic DDIM step (eq. 12, sigma = 0) with the exact denoiser, written out."""
    x0 = exact_x0(z, alpha_bar)
    eps = (z - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
    return math.sqrt(alpha_bar_to) * x0 + math.sqrt(1 - alpha_bar_to) * eps


@pytest.mark.parametrize("steps", [(999, 749, 499), (499, 249, 1000), (300, 200, 100)])
def test_one_student_step_on_the_target_equals_two_teacher_ddim_steps(steps):
    schedule = schedules.cosine(1000)
    teacher = MixtureEpsilon(GaussianMixture(torch.ones(1), MEAN[None], VAR * torch.eye(2)[None]), schedule)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, t_mid, t_next = (torch.full((64,), s) for s in steps)
    x_target = distillation_target(teacher, schedule, z, t, t_mid, t_next)

    ab = schedule.alpha_bars.tolist() + [1.0]  # index 1000 = the clean sample
    z_next = hand_ddim(hand_ddim(z, ab[steps[0]], ab[steps[1]]), ab[steps[1]], ab[steps[2]])
    # a student that predicts x_target takes one DDIM step t -> t'' and lands on the teacher's z_t''
    eps_student = (z - math.sqrt(ab[steps[0]]) * x_target) / math.sqrt(1 - ab[steps[0]])
    one_step = math.sqrt(ab[steps[2]]) * x_target + math.sqrt(1 - ab[steps[2]]) * eps_student
    torch.testing.assert_close(one_step, z_next, atol=1e-7, rtol=1e-6)  # t = 999: alpha_bar ~ 1e-9 amplifies round-off
    # the intermediate time matters: the teacher's steps in the other order end elsewhere
    swapped = hand_ddim(hand_ddim(z, ab[steps[0]], ab[steps[2]]), ab[steps[2]], ab[steps[1]]) if steps[2] < 1000 else None
    if swapped is not None:
        assert (swapped - z_next).abs().max() > 1e-3


def test_the_target_is_the_teacher_itself_when_its_two_steps_are_one():
    """A teacher whose denoiser does not depend on x_t (always MEAN) ends its two steps on the same line as one step:
    then x~ = MEAN exactly."""
    schedule = schedules.linear(100)

    def constant(x, t):  # eps of the constant denoiser x0_hat = MEAN
        return (x - schedule.alpha_bars[t].sqrt()[:, None] * MEAN) / (1 - schedule.alpha_bars[t])[:, None].sqrt()

    z = torch.randn(5, 2, dtype=torch.float64)
    t, t_mid, t_next = torch.full((5,), 90), torch.full((5,), 50), torch.full((5,), 10)
    torch.testing.assert_close(distillation_target(constant, schedule, z, t, t_mid, t_next), MEAN.expand(5, 2))


def test_halving_grids():
    teacher, student = halving_grids(1000, 8)
    assert teacher == [999, 874, 749, 624, 499, 374, 249, 124]
    assert student == teacher[::2] == [999, 749, 499, 249]
    for odd in (3, 7, 1):
        with pytest.raises(ValueError, match="even"):
            halving_grids(1000, odd)
    with pytest.raises(ValueError, match="every other"):
        halving_grids(1000, 64, "leading")  # 64-step leading grid: multiples of 15; 32-step: of 31


def test_bad_input_is_rejected():
    schedule = schedules.cosine(100)
    with pytest.raises(ValueError, match="t_mid"):
        distillation_target(lambda x, t: x, schedule, torch.zeros(2, 2), torch.tensor([50, 50]), torch.tensor([60, 60]),
                            torch.tensor([10, 10]))
    with pytest.raises(ValueError, match="teacher's schedule"):
        next(train(MLP(hidden=8, n_blocks=1), schedules.linear(100), torch.randn(16, 2), steps=1, progress=False,
                   objective=Distillation(MLP(hidden=8, n_blocks=1), schedule, 4)))
    with pytest.raises(ValueError, match="objective sets the target"):
        next(train(MLP(hidden=8, n_blocks=1), schedule, torch.randn(16, 2), steps=1, progress=False, prediction="v",
                   objective=Distillation(MLP(hidden=8, n_blocks=1), schedule, 4)))


def test_a_round_changes_only_the_student_and_keeps_its_grid():
    schedule = schedules.cosine(1000)
    teacher = MLP(hidden=16, n_blocks=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = MLP(hidden=16, n_blocks=1)
    student.load_state_dict(teacher.state_dict())
    objective = Distillation(teacher, schedule, 8)
    assert objective.student_steps == 4 and objective.teacher is not teacher
    for _ in train(student, schedule, torch.randn(256, 2), steps=5, batch_size=32, progress=False, objective=objective):
        pass
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert not any(p.requires_grad for p in objective.teacher.parameters())
    x = ddim_sample(student, schedule, (10, 2), steps=4, spacing="trailing", progress=False)
    assert x.shape == (10, 2) and torch.isfinite(x).all()



def test_distill_script_writes_a_student_that_names_its_sampler(tmp_path, monkeypatch, load_script):
    import sys
    from pathlib import Path

    from tinydiff.checkpoint import read_config, save_checkpoint
    from tinydiff.models import UNet
    from tinydiff.pretrained import load_diffusion_model

    root = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    net = UNet(channels=8, mults=(1, 2), num_classes=10)
    save_checkpoint(tmp_path / "teacher", net, net.config,
                    extra={"schedule": {"name": "cosine", "T": 1000}, "train": {"prediction": "v"},
                           "recommended_guidance": 2.0, "data_shape": [1, 32, 32]})
    script = load_script("distill_mnist")
    monkeypatch.chdir(root)  # the script reads the shipped digits from data/
    out = tmp_path / "student"
    monkeypatch.setattr(sys, "argv", ["distill_mnist.py", "--teacher", str(tmp_path / "teacher"), "--output", str(out),
                                      "--from-steps", "8", "--to-steps", "2", "--first-round-steps", "2",
                                      "--steps-per-round", "1", "--batch-size", "4", "--eval-n", "0"])
    script.main()
    student = load_diffusion_model(out)
    extra = read_config(out)["extra"]
    assert student.sampler == "ddim:2:trailing" and student.recommended_guidance == 1.0 and student.prediction == "v"
    rounds = extra["distillation"]["rounds"]
    assert [(r["teacher_steps"], r["student_steps"], r["train_steps"]) for r in rounds] == [(8, 4, 2), (4, 2, 1)]
    assert rounds[0]["teacher_guidance"] == 2.0 and rounds[1]["teacher_guidance"] == 1.0  # guidance distilled once
    assert extra["distillation"]["teacher_sha256"] == read_config(tmp_path / "teacher")["sha256"]
    monkeypatch.setattr(sys, "argv", ["distill_mnist.py", "--teacher", str(tmp_path / "teacher"), "--output", str(out),
                                      "--from-steps", "8", "--to-steps", "3", "--eval-n", "0"])
    with pytest.raises(SystemExit, match="halved a whole number of times"):
        script.main()
