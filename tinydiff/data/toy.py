"""2-D toy distributions: where every sample, density and score can be drawn.

The point clouds (two moons, swiss roll, checkerboard, spiral) are scaled to
roughly zero mean and unit variance per coordinate, so a diffusion model with
a standard schedule sees them like standardised data.

:class:`GaussianMixture` is the course's *oracle*: its density, score and
noised versions are known exactly, so a sampler can be checked with the true
score before any network is trained.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _on(generator: torch.Generator | None) -> torch.device | None:
    """Where a toy sample is drawn: on the generator's device (a generator draws only on its own), else the CPU."""
    return None if generator is None else generator.device


def _uniform(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, device=_on(generator))


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, device=_on(generator))


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n!r}")


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles (as in scikit-learn's ``make_moons``), shape [n, 2]."""
    _check_n(n)
    upper = _uniform(n, generator) < 0.5
    angle = _uniform(n, generator) * math.pi
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    pts = torch.stack([x, y], dim=1) + noise * _normal((n, 2), generator)
    return (pts - torch.tensor([0.5, 0.25], device=pts.device)) / torch.tensor([0.87, 0.5], device=pts.device)


def swiss_roll(n: int, noise: float = 0.02, generator: torch.Generator | None = None) -> Tensor:
    """A 2-D swiss roll: r = theta, theta in [1.5 pi, 4.5 pi], shape [n, 2]."""
    _check_n(n)
    theta = 1.5 * math.pi * (1.0 + 2.0 * _uniform(n, generator))
    pts = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / 7.5
    return pts + noise * _normal((n, 2), generator)


def checkerboard(n: int, squares: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the dark squares of a ``squares`` x ``squares`` board on [-sqrt(3), sqrt(3)]^2, shape [n, 2]."""
    _check_n(n)
    cell = torch.randint(0, squares * squares // 2, (n,), generator=generator, device=_on(generator))
    row = cell // (squares // 2)
    col = 2 * (cell % (squares // 2)) + row % 2
    u = torch.rand(n, 2, generator=generator, device=_on(generator))
    pts = torch.stack([col + u[:, 0], row + u[:, 1]], dim=1) / squares
    return (2.0 * pts - 1.0) * math.sqrt(3.0)


def spiral(n: int, turns: float = 2.0, noise: float = 0.03, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved Archimedean spirals, shape [n, 2]."""
    _check_n(n)
    arm = (_uniform(n, generator) < 0.5).to(torch.float32)
    s = _uniform(n, generator).sqrt()  # sqrt spreads points evenly along the arm
    theta = s * turns * 2 * math.pi + arm * math.pi
    r = s * 1.6
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return pts + noise * _normal((n, 2), generator)


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions with exact density, score and noised versions.

    p(x) = sum_k w_k N(x; mu_k, Sigma_k)

    Parameters are stored in float64 on the CPU; every method returns results
    in the dtype and on the device of its input ``x``.
    Shapes: ``weights`` [K] (normalised here), ``means`` [K, D], ``covs`` [K, D, D].
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape [K, D], got {list(means.shape)}")
        K, D = means.shape
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape [K] = [{K}], got {list(weights.shape)}")
        if covs.shape != (K, D, D):
            raise ValueError(f"covs must have shape [K, D, D] = [{K}, {D}, {D}], got {list(covs.shape)}")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        if not torch.allclose(covs, covs.transpose(-1, -2)):
            raise ValueError("every covariance matrix must be symmetric")
        chol, info = torch.linalg.cholesky_ex(covs)
        if (info != 0).any():
            raise ValueError("every covariance matrix must be positive definite")
        self.weights = weights / weights.sum()
        self.means = means
        self.covs = covs
        self._chol = chol
        self._precisions = torch.cholesky_inverse(chol)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [N, {self.dim}], got {list(x.shape)}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples, shape [n, D], float32 on the CPU (or on the generator's device)."""
        return self.sample_with_labels(n, generator)[0]

    def sample_with_labels(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Samples [n, D] (float32) and the index [n] of the component each came from, on the CPU or on the
        generator's device. Drawn in float64 on the CPU; in float32 elsewhere (MPS has no float64)."""
        _check_n(n)
        device = torch.device("cpu") if generator is None else generator.device
        work = torch.float64 if device.type == "cpu" else torch.float32
        k = torch.multinomial(self.weights.to(work).to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=work)
        means, chol = self.means.to(work).to(device), self._chol.to(work).to(device)
        x = means[k] + (chol[k] @ z.unsqueeze(-1)).squeeze(-1)
        return x.to(torch.float32), k

    def _component_log_probs(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; mu_k, Sigma_k) for every point and component, shape [N, K], float64 on the CPU
        (exact; the public methods hand their results back in x's dtype, on x's device)."""
        self._check_x(x)
        xd = x.cpu().to(torch.float64)
        diff = xd[:, None, :] - self.means[None]  # [N, K, D]
        # Solve L y = diff so that |y|^2 = diff^T Sigma^-1 diff.
        y = torch.linalg.solve_triangular(self._chol[None], diff.unsqueeze(-1), upper=False).squeeze(-1)
        maha = (y**2).sum(-1)
        log_det = 2.0 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + log_det)
        return torch.log(self.weights)[None] + log_norm[None] - 0.5 * maha

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape [N] for x of shape [N, D]."""
        return torch.logsumexp(self._component_log_probs(x), dim=1).to(x.dtype).to(x.device)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities p(k | x), shape [N, K]."""
        return torch.softmax(self._component_log_probs(x), dim=1).to(x.dtype).to(x.device)

    def score(self, x: Tensor) -> Tensor:
        """The exact score grad_x log p(x) = sum_k p(k|x) Sigma_k^{-1} (mu_k - x), shape [N, D].

        Computed in closed form (no autograd): the gradient of a log-sum-exp is the
        responsibility-weighted sum of each component's score.
        """
        r = torch.softmax(self._component_log_probs(x), dim=1)  # [N, K]
        diff = self.means[None] - x.cpu().to(torch.float64)[:, None, :]  # [N, K, D]
        comp = (self._precisions[None] @ diff.unsqueeze(-1)).squeeze(-1)
        return (r.unsqueeze(-1) * comp).sum(1).to(x.dtype).to(x.device)

    def noised(self, alpha_bar: float | Tensor) -> "GaussianMixture":
        """The law of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps when x_0 follows this mixture.

        Each component maps to N(sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I) with the same weight
        (a linear map of a Gaussian plus independent Gaussian noise is Gaussian).
        """
        ab = float(alpha_bar)
        if not 0.0 < ab <= 1.0:
            raise ValueError(f"alpha_bar must lie in (0, 1], got {ab}")
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, math.sqrt(ab) * self.means, ab * self.covs + (1.0 - ab) * eye)

    def perturbed(self, sigma: float | Tensor) -> "GaussianMixture":
        """The law of x + sigma * z (variance-exploding noise, Song & Ermon 2019): covariances grow by sigma^2 I."""
        s = float(sigma)
        if not s >= 0.0:
            raise ValueError(f"sigma must be non-negative, got {s}")
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, self.means, self.covs + s * s * eye)

    def component(self, k: int) -> "GaussianMixture":
        """Component k alone, N(mu_k, Sigma_k), as a one-component mixture: the class-conditional p(x | y = k)."""
        if not 0 <= k < self.n_components:
            raise ValueError(f"component index k={k} is out of range 0..{self.n_components - 1}")
        return GaussianMixture(self.weights[k : k + 1], self.means[k : k + 1], self.covs[k : k + 1])

    def condition(self, known: list[int], value: Tensor) -> "GaussianMixture":
        """The exact conditional p(x_u | x_k = value) of the unknown coordinates u given the known ones k.

        Again a Gaussian mixture (Bishop 2006, eqs. 2.81-2.82 per component; Bayes for the weights):

            w_j'   proportional to  w_j N(value; mu_jk, Sigma_jkk)
            mu_j'  = mu_ju + Sigma_juk Sigma_jkk^-1 (value - mu_jk)
            Sigma_j' = Sigma_juu - Sigma_juk Sigma_jkk^-1 Sigma_jku

        ``known``: indices of the known coordinates (a non-empty proper subset of 0..D-1);
        ``value`` [len(known)]. Returns a mixture over the other coordinates, in increasing order.
        """
        known = sorted(set(int(i) for i in known))
        if not known or len(known) >= self.dim or known[0] < 0 or known[-1] >= self.dim:
            raise ValueError(f"known must be a non-empty proper subset of the coordinates 0..{self.dim - 1}, got {known}")
        value = torch.as_tensor(value, dtype=torch.float64).flatten().cpu()
        if value.shape != (len(known),):
            raise ValueError(f"value must have {len(known)} entries, one per known coordinate, got {list(value.shape)}")
        unknown = [i for i in range(self.dim) if i not in known]
        k, u = torch.tensor(known), torch.tensor(unknown)
        s_kk = self.covs[:, k][:, :, k]
        s_uk = self.covs[:, u][:, :, k]
        s_uu = self.covs[:, u][:, :, u]
        gain = s_uk @ torch.linalg.inv(s_kk)  # [K, |u|, |k|]
        diff = value[None] - self.means[:, k]  # [K, |k|]
        means = self.means[:, u] + (gain @ diff.unsqueeze(-1)).squeeze(-1)
        covs = s_uu - gain @ s_uk.transpose(-1, -2)
        marginal = GaussianMixture(self.weights, self.means[:, k], s_kk)
        log_w = marginal._component_log_probs(value[None])[0]
        return GaussianMixture(torch.softmax(log_w, 0), means, 0.5 * (covs + covs.transpose(-1, -2)))

    def mean(self) -> Tensor:
        """E[x], shape [D]."""
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Cov[x] = sum_k w_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T, shape [D, D]."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - m[:, None] * m[None, :]


def eight_gaussians(radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """Eight equal-weight isotropic Gaussians evenly spaced on a circle of ``radius``."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(8, 2, 2).clone()
    return GaussianMixture(torch.ones(8), means, covs)


def anisotropic_mixture() -> GaussianMixture:
    """Three elongated, rotated Gaussians with unequal weights (0.5, 0.3, 0.2): a harder oracle than eight_gaussians."""
    means = torch.tensor([[-1.2, -0.6], [1.3, -0.4], [0.0, 1.4]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    covs = []
    for angle, (a, b) in zip([math.pi / 4, -math.pi / 3, 0.0], [(0.6, 0.08), (0.5, 0.1), (0.7, 0.12)]):
        c, s = math.cos(angle), math.sin(angle)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        covs.append(rot @ torch.diag(torch.tensor([a**2, b**2], dtype=torch.float64)) @ rot.T)
    return GaussianMixture(weights, means, torch.stack(covs))


def two_gaussians(separation: float = 4.0, weights: tuple[float, float] = (0.8, 0.2), std: float = 0.5) -> GaussianMixture:
    """Two well-separated 2-D Gaussians with unequal weights: the classic case where plain Langevin gets the weights wrong."""
    means = torch.tensor([[-separation / 2, 0.0], [separation / 2, 0.0]], dtype=torch.float64)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone()
    return GaussianMixture(torch.tensor(weights), means, covs)


TOY_DATASETS = {"two_moons": two_moons, "swiss_roll": swiss_roll, "checkerboard": checkerboard, "spiral": spiral}


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Samples [n, 2] from a named point cloud or mixture ("eight_gaussians", "anisotropic")."""
    if name in TOY_DATASETS:
        return TOY_DATASETS[name](n, generator=generator)
    if name == "eight_gaussians":
        return eight_gaussians().sample(n, generator=generator)
    if name == "anisotropic":
        return anisotropic_mixture().sample(n, generator=generator)
    known = list(TOY_DATASETS) + ["eight_gaussians", "anisotropic"]
    raise ValueError(f"unknown toy dataset {name!r}; known: {', '.join(known)}")
