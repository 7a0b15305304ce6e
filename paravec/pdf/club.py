"""CLUB: the contrastive log-ratio upper bound of mutual information (vCLUB variant).

PDF minimises I(h_i; h_j) between parallel embeddings through this bound (paper eq. 3 and 5):

    I(X; Y) <= E_p(x,y)[log q(y|x)] - E_p(x)p(y)[log q(y|x)]

where q(y|x) is a diagonal Gaussian whose mean and log-variance come from two small MLPs
(paper appendix A.2; the log-variance ends in Tanh, which keeps the variance within
[e^-1, e^1] and the training stable).

Numerical conventions follow the CLUB reference implementation, so estimates are comparable:

* :meth:`CLUB.log_likelihood` is the reference's *unnormalised* log-likelihood,
  ``sum_d [-(mu - y)^2 / var - logvar]``, i.e. twice the Gaussian log-density without its
  constant. The factor 2 only rescales the estimator's gradient (Adam is insensitive to it).
* :meth:`CLUB.forward` is the bound with the variance-weighted squared errors only
  (``-(mu - y)^2 / 2 / var``): the ``logvar`` and constant parts of the log-density are the
  same for positive and negative pairs of a given x and cancel.

The negative term averages over in-batch pairs (y_m, x_k). The reference code materialises
``[B, B, d]`` for it (6.4 GB in float32 at B=1024, d=1536); per dimension the same value has the
closed form ``mean_m (y_m - mu_k)^2 = var(y) + (mean(y) - mu_k)^2`` (population variance), which
needs O(B*d) memory. When embeddings sit far from the origin (LLM hidden states have a few
large, nearly constant dimensions) the bound is a small difference of large squares, so it is
evaluated per dimension as ``var(y) + (mean(y) - y_k) * (mean(y) + y_k - 2 mu_k)`` on y and mu
shifted by one sample: no large squares are subtracted and the mean is taken of small numbers.
In float32 this stays within 1e-5 (relative) of a float64 evaluation where the reference form
is off by 1e-4 to 1e-3 (tests/pdf/test_club.py).
"""

from __future__ import annotations

import torch
from torch import nn


def _gaussian_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class CLUB(nn.Module):
    """Variational q(y|x) = N(mu(x), diag(exp(logvar(x)))) and the vCLUB bound of I(X; Y).

    Args:
        x_dim: size of the conditioning embedding x.
        y_dim: size of the predicted embedding y.
        hidden_dim: the "d_h" of the paper; each MLP's hidden layer has ``hidden_dim // 2``
            units (paper: d_h = 4d, so 2d units).
        exclude_self: the negative term of :meth:`forward` averages over the other samples
            m != k, as in paper eq. 5, which is the unbiased estimate of E_p(x)p(y). With
            ``False`` it averages over all m, including the positive pair, as the CLUB reference
            code does. The two are exactly proportional: bound(all m) = (B-1)/B * bound(m != k).

    All inputs are ``[..., B, d]``: leading dimensions are independent batches (e.g. several
    path pairs stacked), and the in-batch negatives are taken along dim -2.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int, exclude_self: bool = True) -> None:
        super().__init__()
        if hidden_dim < 2:
            raise ValueError(f"hidden_dim must be at least 2, got {hidden_dim}")
        self.mean_net = _gaussian_mlp(x_dim, hidden_dim // 2, y_dim)
        self.logvar_net = nn.Sequential(_gaussian_mlp(x_dim, hidden_dim // 2, y_dim), nn.Tanh())
        self.exclude_self = exclude_self

    def mean_logvar(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(y|x), each ``[..., B, y_dim]``."""
        return self.mean_net(x), self.logvar_net(x)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Unnormalised log q(y|x) of the paired samples: sum over dims, mean over samples."""
        mu, logvar = self.mean_logvar(x)
        return (-((mu - y) ** 2) / logvar.exp() - logvar).sum(dim=-1).mean()

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the estimator minimises (paper eq. 4): the negative log-likelihood."""
        return -self.log_likelihood(x, y)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The vCLUB estimate: log q of positive pairs minus the in-batch average over pairs.

        Returns ``mean_k sum_d [mean_m (y_m - mu_k)^2 - (y_k - mu_k)^2] / (2 var_k)`` with m over
        all samples or m != k (see ``exclude_self``), computed in O(B*d) memory.
        """
        if x.shape[:-1] != y.shape[:-1]:
            raise ValueError(f"x and y must pair up sample by sample, got {tuple(x.shape)}, {tuple(y.shape)}")
        batch = y.shape[-2]
        if self.exclude_self and batch < 2:
            raise ValueError("the bound with exclude_self needs at least two samples per batch")
        mu, logvar = self.mean_logvar(x)
        # The bound is invariant to shifting y and mu together. Shifting by one sample (an exact
        # subtraction for nearby values) makes the mean below a mean of small numbers, whose
        # rounding error would otherwise be multiplied by |mean(y)| in the terms that follow.
        shift = y[..., :1, :].detach()
        y_shifted, mu_shifted = y - shift, mu - shift
        y_mean = y_shifted.mean(dim=-2, keepdim=True)
        y_var = ((y_shifted - y_mean) ** 2).mean(dim=-2, keepdim=True)
        # mean_m (y_m - mu_k)^2 - (y_k - mu_k)^2 = var(y) + (mean(y) - mu_k)^2 - (y_k - mu_k)^2,
        # with the difference of squares factored so no two large squares are subtracted.
        gap = y_var + (y_mean - y_shifted) * ((y_mean - mu_shifted) + (y - mu))
        if self.exclude_self:
            # mean over m != k: (B * mean_all - (y_k - mu_k)^2) / (B - 1), minus (y_k - mu_k)^2
            gap = gap * (batch / (batch - 1))
        return (gap / (2.0 * logvar.exp())).sum(dim=-1).mean()
