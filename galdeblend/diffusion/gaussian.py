"""Gaussian prior with diagonal-plus-low-rank covariance, fitted by PPCA.

``x ~ N(mu, Sigma)`` with ``Sigma = diag(d) + U U^T`` (``U`` of shape ``(D, r)``). Its
denoiser is analytic (Tweedie): ``E[x | x_t] = x_t - sigma^2 (Sigma + sigma^2 I)^-1 (x_t - mu)``,
evaluated with the Woodbury identity in ``O(D r^2)`` per noise level. It initializes EM
(Rozet et al. 2024, Sec. 4.2; Wagner-Carena et al. 2025, Sec. 3.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from galdeblend.diffusion.schedule import VESchedule

__all__ = ["GaussianPrior"]


class GaussianPrior(nn.Module):
    """Gaussian prior ``N(mean, diag(cov_diag) + cov_factors cov_factors^T)``.

    Parameters
    ----------
    mean : Tensor, shape ``(*shape)``
        Mean; its shape is the event shape of one source.
    cov_diag : Tensor, shape ``(*shape)`` or ()
        Diagonal part of the covariance (a scalar broadcasts).
    cov_factors : Tensor, shape (D, r), optional
        Low-rank factor ``U`` with ``D = prod(shape)``.
    sigma_min, sigma_max : float
        Noise range of the diffusion schedule used to sample from it.
    """

    kind = "gaussian"

    def __init__(
        self,
        mean: Tensor,
        cov_diag: Tensor | float,
        cov_factors: Tensor | None = None,
        *,
        sigma_min: float = 1e-3,
        sigma_max: float = 1e2,
    ):
        super().__init__()
        mean = torch.as_tensor(mean)
        self.shape = tuple(mean.shape)
        D = mean.numel()
        cov_diag = torch.as_tensor(cov_diag, dtype=mean.dtype).expand(self.shape).reshape(D)
        if cov_factors is None:
            cov_factors = mean.new_zeros(D, 0)
        if cov_factors.ndim != 2 or cov_factors.shape[0] != D:
            raise ValueError(
                f"GaussianPrior: cov_factors must be (D={D}, r), got {tuple(cov_factors.shape)}"
            )
        if not torch.all(cov_diag > 0):
            raise ValueError("GaussianPrior: cov_diag must be > 0 everywhere")
        self.register_buffer("mean", mean.reshape(D).clone())
        self.register_buffer("cov_diag", cov_diag.clone())
        self.register_buffer("cov_factors", cov_factors.to(mean.dtype).clone())
        self.schedule = VESchedule(sigma_min, sigma_max)

    @classmethod
    def smooth(
        cls,
        shape: tuple[int, int, int],
        fwhm: float,
        *,
        floor: float = 1e-3,
        sigma_min: float = 1e-3,
        sigma_max: float = 1e2,
    ) -> GaussianPrior:
        """Zero-mean prior ``(C, H, W)`` whose samples are smooth on the scale ``fwhm`` (pixels).

        In each plane, independently: Gaussian bumps of that FWHM (standard deviation ``s``)
        centred on a square grid of spacing ``1.5 s``, close enough for the variance to ripple
        by about 5% (the low-rank factors, rank about ``C (H / 1.5 s) (W / 1.5 s)``), scaled
        so that the variance per pixel is at most 1 and about 1 away from the edges, plus
        ``floor`` on the diagonal. An EM start whose variance below the operators' resolution
        is ``floor``: the posterior keeps a prior's structure that no observation constrains,
        so a white ``N(0, I)`` start leaves that white structure in the learned prior.
        """
        C, H, W = shape
        width = float(fwhm) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        spacing = max(1.5 * width, 1.0)
        cy = torch.arange(spacing / 2 - 0.5, H, spacing, dtype=torch.float64)
        cx = torch.arange(spacing / 2 - 0.5, W, spacing, dtype=torch.float64)
        gy = torch.exp(-((torch.arange(H)[:, None] - cy) ** 2) / (2 * width**2))  # (H, ny)
        gx = torch.exp(-((torch.arange(W)[:, None] - cx) ** 2) / (2 * width**2))  # (W, nx)
        bumps = torch.einsum("ha,wb->hwab", gy, gx).reshape(H * W, -1)  # (H W, k)
        bumps = bumps / bumps.square().sum(1).max().sqrt()
        factors = torch.block_diag(*[bumps] * C).to(torch.float32)  # (C H W, C k)
        return cls(
            torch.zeros(shape),
            floor,
            factors,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
        )

    @property
    def rank(self) -> int:
        return self.cov_factors.shape[1]

    def covariance(self) -> Tensor:
        """Dense covariance ``(D, D)`` (small ``D`` only)."""
        U = self.cov_factors
        return torch.diag(self.cov_diag) + U @ U.T

    def _solve(self, v: Tensor, sigma2: Tensor) -> Tensor:
        """``(Sigma + sigma^2 I)^-1 v`` for ``v`` ``(B, D)`` and ``sigma2`` ``(B, 1)``."""
        d = self.cov_diag.to(v.dtype) + sigma2  # (B, D)
        U = self.cov_factors.to(v.dtype)  # (D, r)
        w = v / d
        if U.shape[1] == 0:
            return w
        eye = torch.eye(U.shape[1], dtype=v.dtype, device=v.device)
        if bool((sigma2 == sigma2[0]).all()):
            # one noise level for the batch (a sampler's step): one (r, r) system, O(D r^2)
            Ud = U / d[0].unsqueeze(-1)  # (D, r)
            z = torch.linalg.solve(eye + U.T @ Ud, (w @ U).T).T  # (B, r)
            return w - z @ Ud.T
        Ud = U.unsqueeze(0) / d.unsqueeze(-1)  # (B, D, r)
        K = eye + U.T @ Ud  # (B, r, r)
        z = torch.linalg.solve(K, (w @ U).unsqueeze(-1)).squeeze(-1)  # (B, r)
        return w - torch.einsum("bdr,br->bd", Ud, z)

    def forward(self, x_t: Tensor, sigma_t: Tensor) -> Tensor:
        """Analytic denoiser ``E[x | x_t]``: ``(B, *shape)``, ``(B,)`` -> ``(B, *shape)``."""
        B = x_t.shape[0]
        x = x_t.reshape(B, -1)
        sigma2 = sigma_t.to(x.dtype).expand(B).reshape(B, 1) ** 2
        x_hat = x - sigma2 * self._solve(x - self.mean.to(x.dtype), sigma2)
        return x_hat.reshape(x_t.shape)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log N(x; mean, Sigma)`` for ``x`` ``(B, *shape)``, returns ``(B,)``."""
        B = x.shape[0]
        v = x.reshape(B, -1).to(self.mean.dtype) - self.mean
        zero = v.new_zeros(B, 1)
        maha = (v * self._solve(v, zero)).sum(-1)
        U = self.cov_factors
        K = torch.eye(U.shape[1], dtype=v.dtype, device=v.device) + U.T @ (
            U / self.cov_diag[:, None]
        )
        logdet = torch.log(self.cov_diag).sum() + torch.linalg.slogdet(K)[1]
        D = v.shape[1]
        return -0.5 * (maha + logdet + D * math.log(2 * math.pi))

    def sample(
        self, n: int, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact samples ``(n, *shape)``."""
        g = (
            generator
            if generator is not None
            else torch.Generator(self.mean.device).manual_seed(seed or 0)
        )
        D, r = self.cov_factors.shape
        kw = dict(generator=g, dtype=self.mean.dtype, device=self.mean.device)
        x = (
            self.mean
            + torch.randn(n, D, **kw) * self.cov_diag.sqrt()
            + torch.randn(n, r, **kw) @ self.cov_factors.T
        )
        return x.reshape(n, *self.shape)

    def fit(
        self, samples: Tensor, rank: int | None = None, *, iterations: int = 50
    ) -> GaussianPrior:
        """Fit mean and covariance to ``samples`` ``(N, *shape)`` in place; returns ``self``.

        PPCA (Tipping & Bishop 1999) gives the initial factors from the top ``rank``
        principal components (all ``D`` of them where ``rank >= D``, the number of values
        per item); ``iterations`` of factor-analysis EM then let the diagonal differ per
        pixel. Computed in float64 without forming the ``(D, D)`` sample covariance,
        ``O(N D r)`` per iteration.
        """
        rank = self.rank if rank is None else int(rank)
        X = samples.reshape(samples.shape[0], -1).to(torch.float64)
        N, D = X.shape
        if D != self.mean.numel():
            raise ValueError(
                f"GaussianPrior.fit: samples have {D} values per item, "
                f"prior has {self.mean.numel()}"
            )
        mean = X.mean(0)
        X = X - mean
        var = X.square().mean(0)
        floor = 1e-6 * var.mean().clamp_min(1e-30)
        if rank == 0:
            U = X.new_zeros(D, 0)
            psi = var.clamp_min(floor)
        else:
            U, psi = _ppca(X, rank, floor)
            for _ in range(iterations):
                U, psi = _factor_analysis_step(X, U, psi, var, floor)
        dtype = self.mean.dtype
        self.mean = mean.to(dtype)
        self.cov_diag = psi.to(dtype)
        self.cov_factors = U.to(dtype)
        return self

    def config(self) -> dict:
        """JSON-serializable settings (the tensors are saved separately)."""
        return {
            "shape": list(self.shape),
            "sigma_min": self.schedule.sigma_min,
            "sigma_max": self.schedule.sigma_max,
        }

    def tensors(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "cov_diag": self.cov_diag, "cov_factors": self.cov_factors}

    @classmethod
    def from_saved(cls, config: dict, tensors: dict[str, Tensor]) -> GaussianPrior:
        shape = tuple(config["shape"])
        return cls(
            tensors["mean"].reshape(shape),
            tensors["cov_diag"].reshape(shape),
            tensors["cov_factors"],
            sigma_min=config["sigma_min"],
            sigma_max=config["sigma_max"],
        )

    def save(self, directory) -> None:
        """Write ``prior.json`` and ``weights.safetensors`` into ``directory``."""
        from galdeblend.diffusion.prior import save_prior

        save_prior(self, directory)

    @staticmethod
    def load(directory) -> GaussianPrior:
        from galdeblend.diffusion.prior import load_prior

        return load_prior(directory)


def _ppca(X: Tensor, rank: int, floor: Tensor) -> tuple[Tensor, Tensor]:
    """PPCA factors ``(D, r)`` and isotropic noise ``(D,)`` of centred data ``X`` ``(N, D)``."""
    N, D = X.shape
    if min(N, D) <= 4 * rank + 16:
        _, s, Vh = torch.linalg.svd(X, full_matrices=False)
        V = Vh.T
    else:
        g = torch.Generator(device=X.device).manual_seed(0)
        Omega = torch.randn(D, 2 * rank + 10, generator=g, dtype=X.dtype, device=X.device)
        Q, _ = torch.linalg.qr(X @ Omega)
        for _ in range(2):  # power iterations sharpen the top subspace
            Q, _ = torch.linalg.qr(X @ (X.T @ Q))
        _, s, Vh = torch.linalg.svd(Q.T @ X, full_matrices=False)
        V = Vh.T
    eig = s.square() / N
    total = X.square().sum() / N
    noise = ((total - eig[:rank].sum()) / max(D - rank, 1)).clamp_min(floor)
    scale = (eig[:rank] - noise).clamp_min(0).sqrt()
    return V[:, :rank] * scale, torch.full((D,), float(noise), dtype=X.dtype, device=X.device)


def _factor_analysis_step(
    X: Tensor, U: Tensor, psi: Tensor, var: Tensor, floor: Tensor
) -> tuple[Tensor, Tensor]:
    """One EM step of factor analysis with sample covariance ``S = X^T X / N`` kept implicit."""
    N = X.shape[0]
    r = U.shape[1]
    Upsi = U / psi[:, None]  # (D, r)
    G = torch.linalg.inv(torch.eye(r, dtype=X.dtype, device=X.device) + U.T @ Upsi)  # (r, r)
    beta = G @ Upsi.T  # (r, D): E[z | x] = beta x
    S_beta = X.T @ (X @ beta.T) / N  # (D, r) = S beta^T
    Ezz = torch.eye(r, dtype=X.dtype, device=X.device) - beta @ U + beta @ S_beta  # (r, r)
    U_new = torch.linalg.solve(Ezz, S_beta.T).T
    psi_new = (var - (U_new * S_beta).sum(1)).clamp_min(floor)
    return U_new, psi_new
