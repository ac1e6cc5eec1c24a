"""The fast solvers against exact answers: convergence order on a Gaussian (closed-form ODE solution),
sample quality on Gaussian mixtures with the exact epsilon, the predictor-corrector's corrector, bad input."""

import math

import pytest
import torch

from tinydiff import schedules
from tinydiff.data.toy import GaussianMixture, anisotropic_mixture
from tinydiff.metrics import energy_distance, energy_distance_floor
from tinydiff.oracle import MixtureEpsilon, gaussian_ode_solution
from tinydiff.registry import METHODS, SamplerSpec, network_calls
from tinydiff.samplers import ddim_sample, ddim_timesteps, denoise
from tinydiff.solvers import (
    dpm_solver_sample,
    heun_sample,
    plms_sample,
    predictor_corrector_sample,
    reverse_sde_sample,
)

ODE_SOLVERS = {"ddim": ddim_sample, "heun": heun_sample, "dpm": dpm_solver_sample, "plms": plms_sample}
MEAN = torch.tensor([1.0, -0.5])
COV = torch.tensor([[0.3, 0.1], [0.1, 0.2]])


def zero_eps(x, t):
    return torch.zeros_like(x)


def ode_error(name: str, steps: int, spacing: str | None = None, schedule_name: str = "linear", to: str = "path") -> float:
    """Mean distance between a solver's end point and the exact one, from the same x_T, on Gaussian data.

    ``to="end"``: the exact end point of the ODE at sigma_bar = 0. ``to="path"``: the exact path from the first
    visited step to the last one, then the same final step every solver takes, x0_hat (Tweedie's formula: the
    Euler step to sigma_bar = 0). That last step is first order for every solver and would hide each one's own
    order, so order is measured with ``"path"``. ``spacing=None``: the solver's default.
    """
    schedule = schedules.get(schedule_name, T=1000)
    oracle = MixtureEpsilon(GaussianMixture(torch.ones(1), MEAN[None], COV[None]), schedule)
    x_T = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spacing = spacing or METHODS[name].spacing
    out = ODE_SOLVERS[name](oracle, schedule, x_T.shape, steps=steps, spacing=spacing, x_T=x_T, progress=False)
    ts = ddim_timesteps(1000, steps, spacing).tolist()
    if to == "end":
        exact = gaussian_ode_solution(MEAN, COV, x_T, float(schedule.alpha_bars[ts[0]]), 1.0)
    else:
        x_last = gaussian_ode_solution(MEAN, COV, x_T, float(schedule.alpha_bars[ts[0]]), float(schedule.alpha_bars[ts[-1]]))
        exact, _ = denoise(oracle, schedule, x_last, ts[-1])
    return float((out - exact).norm(dim=1).mean())


@pytest.mark.parametrize(
    "name, spacing, order",
    [("ddim", "leading", 1.0), ("heun", "leading", 2.0), ("dpm", "leading", 2.0), ("plms", "trailing", 2.5)],
)
def test_measured_order_on_a_gaussian(name, spacing, order):
    """Slope of log error vs log steps (50 -> 100 -> 200 steps; leading: equal steps down to t = 0).
    PLMS is measured on trailing, which stops at t = T/steps - 1: its Adams-Bashforth weights are uniform in the
    step index, and near t = 0 (sigma_bar ~ sqrt(t + 1)) eps is not smooth in the index, so on grids that reach
    t = 0 its order collapses to ~0.7. The 2.5 is over 50-200 steps, not asymptotic (the error stalls beyond)."""
    steps = [50, 100, 200]
    errors = [ode_error(name, n, spacing) for n in steps]
    slope = -(math.log(errors[2]) - math.log(errors[0])) / (math.log(steps[2]) - math.log(steps[0]))
    assert abs(slope - order) < 0.3, f"{name}: measured order {slope:.2f}, expected {order} (errors {errors})"


def test_higher_order_solvers_beat_ddim_at_the_same_number_of_calls():
    """20 network calls each, each solver's default spacing, cosine schedule, against the exact end point
    (measured: DDIM 0.046, Heun 0.017, DPM-Solver++ 0.0038, PLMS 0.0005)."""
    calls = 20
    ddim = ode_error("ddim", calls, schedule_name="cosine", to="end")
    for name, steps in [("heun", 10), ("dpm", 20), ("plms", 19)]:
        assert network_calls(name, steps) <= calls
        assert ode_error(name, steps, schedule_name="cosine", to="end") < ddim / 2, name


def test_dpm_solver_prefers_a_grid_that_does_not_end_at_t_0():
    """Its default spacing, trailing, against leading: the exact end point on the cosine schedule, 20 steps."""
    assert ode_error("dpm", 20, "trailing", "cosine", to="end") < ode_error("dpm", 20, "leading", "cosine", to="end") / 5


def test_the_gaussian_ode_solution_is_exact():
    """Its own checks: it maps a level to itself, and composing two maps is one map (the flow property)."""
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.allclose(gaussian_ode_solution(MEAN, COV, x, 0.3, 0.3), x)
    mid = gaussian_ode_solution(MEAN, COV, x, 0.01, 0.4)
    assert torch.allclose(gaussian_ode_solution(MEAN, COV, mid, 0.4, 0.9), gaussian_ode_solution(MEAN, COV, x, 0.01, 0.9))
    # and it maps N(sqrt(ab) mean, ab cov + (1 - ab) I) onto the law at the other level: check the covariance
    schedule_from, schedule_to = 0.05, 0.8
    cov_from = schedule_from * COV.double() + (1 - schedule_from) * torch.eye(2, dtype=torch.float64)
    L = torch.linalg.cholesky(cov_from)
    z = torch.randn(200_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xs = math.sqrt(schedule_from) * MEAN.double() + z @ L.T
    ys = gaussian_ode_solution(MEAN, COV, xs, schedule_from, schedule_to)
    cov_to = schedule_to * COV.double() + (1 - schedule_to) * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(torch.cov(ys.T), cov_to, atol=0.01)
    assert torch.allclose(ys.mean(0), math.sqrt(schedule_to) * MEAN.double(), atol=0.01)


def _ed_over_floor(sampler, schedule, mixture, seeds=(1,), **kw) -> float:
    oracle = MixtureEpsilon(mixture, schedule)
    n = 2000
    g = torch.Generator().manual_seed(0)
    floor = energy_distance_floor(mixture.sample, n, generator=g)
    references = [mixture.sample(n, generator=g) for _ in range(3)]
    ratios = []
    for seed in seeds:
        x = sampler(oracle, schedule, (n, 2), generator=torch.Generator().manual_seed(seed), progress=False, **kw)
        ratios.append(sum(energy_distance(x, r) for r in references) / 3 / floor)
    return sum(ratios) / len(ratios)


@pytest.mark.parametrize("sampler, steps", [(ddim_sample, 20), (heun_sample, 10), (dpm_solver_sample, 20), (plms_sample, 19)])
def test_each_ode_solver_reaches_the_noise_floor_in_20_calls(sampler, steps):
    """The anisotropic mixture with its exact epsilon, cosine schedule, leading spacing: energy distance within
    4x its noise floor (a perfect sampler scores about 1 +- 0.6)."""
    ratio = _ed_over_floor(sampler, schedules.get("cosine", T=1000), anisotropic_mixture(), steps=steps)
    assert ratio < 4.0, f"{sampler.__name__}-{steps}: energy distance {ratio:.2f} x its floor"


def test_heun_and_plms_fail_from_the_cosine_schedules_last_step_and_ddim_and_dpm_do_not():
    """The lesson of notebook 09, kept true: from T-1 (trailing), where the clipped last beta of the cosine
    schedule makes sigma_bar jump from 642 to 20,291, a trapezoid over the first step is far off."""
    cosine, mixture = schedules.get("cosine", T=1000), anisotropic_mixture()
    assert _ed_over_floor(heun_sample, cosine, mixture, steps=10, spacing="trailing") > 100
    assert _ed_over_floor(dpm_solver_sample, cosine, mixture, steps=20, spacing="trailing") < 4


def test_the_corrector_improves_the_reverse_sde_on_the_same_grid():
    """Predictor-corrector vs the predictor alone on the same 20 levels (3 seeds averaged, linear schedule).
    At equal network calls the predictor with 40 steps does better here (measured: see notebook 09)."""
    linear, mixture = schedules.get("linear", T=1000), anisotropic_mixture()
    predictor = _ed_over_floor(reverse_sde_sample, linear, mixture, seeds=(1, 2, 3), steps=20)
    corrected = _ed_over_floor(predictor_corrector_sample, linear, mixture, seeds=(1, 2, 3), steps=20, snr=0.16)
    assert corrected < 0.8 * predictor, (corrected, predictor)


def test_the_reverse_sde_converges_to_the_mixture():
    assert _ed_over_floor(reverse_sde_sample, schedules.get("linear", T=1000), anisotropic_mixture(), steps=100) < 2.5


def test_network_calls_are_counted_as_the_solvers_make_them():
    schedule = schedules.get("linear", T=100)
    for name, fn, steps in [("heun", heun_sample, 7), ("dpm", dpm_solver_sample, 7), ("plms", plms_sample, 7),
                            ("sde", reverse_sde_sample, 7), ("pc", predictor_corrector_sample, 7)]:
        count = []

        def model(x, t):
            count.append(1)
            return 0.1 * x

        fn(model, schedule, (3, 2), steps=steps, generator=torch.Generator().manual_seed(0), progress=False)
        assert len(count) == network_calls(name, steps), name


def test_dpm_solver_with_the_data_prediction_x0_equal_to_ddim_is_ddim():
    """With D = x0_hat in every step DPM-Solver++ is DDIM: a model whose x0_hat never changes (x0-prediction of a
    constant) makes both multistep terms equal, so both samplers give the same output."""
    schedule = schedules.get("cosine", T=1000)
    const = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    model = lambda x, t: const.expand_as(x)  # noqa: E731  an x0-predicting network that always says "const"
    x_T = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=10, spacing="trailing", x_T=x_T, prediction="x0", progress=False)
    assert torch.allclose(dpm_solver_sample(model, schedule, x_T.shape, **kw), ddim_sample(model, schedule, x_T.shape, **kw))


def test_trajectories_have_the_shared_shape():
    schedule = schedules.get("linear", T=100)
    x, path = dpm_solver_sample(zero_eps, schedule, (3, 2), steps=5, progress=False, return_trajectory=True,
                                generator=torch.Generator().manual_seed(0))
    assert path.timesteps.tolist() == ddim_timesteps(100, 5, "trailing").tolist()  # DPM-Solver's default spacing
    assert path.xs.shape == (6, 3, 2) and path.x0_preds.shape == (5, 3, 2)
    assert torch.equal(path.xs[-1], x)


def test_solvers_run_on_meta_tensors():
    schedule = schedules.get("linear", T=50)
    x_T = torch.empty(2, 3, device="meta")
    for fn in (heun_sample, dpm_solver_sample, plms_sample, reverse_sde_sample):
        assert fn(zero_eps, schedule, x_T.shape, steps=5, x_T=x_T, progress=False).device.type == "meta"


def test_bad_input_gets_a_clear_error():
    schedule = schedules.get("linear", T=100)
    with pytest.raises(ValueError, match="dpm_solver_sample needs steps >= 2"):
        dpm_solver_sample(zero_eps, schedule, (2, 2), steps=1, progress=False)
    with pytest.raises(ValueError, match="plms_sample needs steps >= 4"):
        plms_sample(zero_eps, schedule, (2, 2), steps=3, progress=False)
    with pytest.raises(ValueError, match="snr must be a positive number"):
        predictor_corrector_sample(zero_eps, schedule, (2, 2), steps=5, snr=0.0, progress=False)
    with pytest.raises(ValueError, match="unknown spacing"):
        heun_sample(zero_eps, schedule, (2, 2), steps=5, spacing="karras", progress=False)
    with pytest.raises(ValueError, match="unknown sampler 'rk4:10'"):
        SamplerSpec.parse("rk4:10", 100)
    with pytest.raises(ValueError, match="plms needs steps >= 4"):
        SamplerSpec.parse("plms:3", 100)


# --------------------------------------------------------------------------- likelihood


def _mixture_log_likelihood(schedule_name: str, steps: int, exact: bool = True, seed: int = 1):
    from tinydiff.likelihood import ode_log_likelihood

    schedule, mixture = schedules.get(schedule_name, T=1000), anisotropic_mixture()
    x = mixture.sample(300, generator=torch.Generator().manual_seed(0)).double()
    truth = mixture.noised(float(schedule.alpha_bars[0])).log_prob(x)
    ll = ode_log_likelihood(MixtureEpsilon(mixture, schedule), schedule, x, steps=steps, exact=exact,
                            generator=torch.Generator().manual_seed(seed), progress=False)
    return ll - truth


@pytest.mark.parametrize("schedule_name, steps, mae", [("cosine", 250, 0.01), ("cosine", 1000, 0.002), ("linear", 1000, 0.004)])
def test_ode_likelihood_with_the_exact_eps_is_the_mixture_log_density(schedule_name, steps, mae):
    """Point by point, in nats (measured MAE: cosine 0.0056 at 250 levels, 0.0004 at 1000; linear 0.0015)."""
    error = _mixture_log_likelihood(schedule_name, steps)
    assert float(error.abs().mean()) < mae


def test_hutchinson_estimate_is_unbiased():
    """One Rademacher probe per point: per-point spread ~1.8 nats, mean error within 3 standard errors of 0."""
    error = _mixture_log_likelihood("cosine", 250, exact=False)
    assert abs(float(error.mean())) < 3 * float(error.std()) / error.numel() ** 0.5
    assert float(error.std()) < 5.0


def test_bits_per_dim_closed_forms():
    """A density of 1 / width^D puts probability 1 on one bin: 0 bits; 256 equally likely bins per dimension: 8 bits."""
    from tinydiff.likelihood import bits_per_dim

    D, width = 784, 2 / 255
    assert float(bits_per_dim(torch.tensor([-D * math.log(width)]), D)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(bits_per_dim(torch.tensor([-D * math.log(width) - D * math.log(256)]), D)[0]) == pytest.approx(8.0)
