"""The DPO loss (direct preference optimization) as one graph node, from the four sequence
log-probabilities of a batch of preference pairs to the loss.

Per pair i, with pi_c / pi_r the policy's log-probabilities of the chosen / rejected
response and ref_c / ref_r the frozen reference model's:

    margin_i = (pi_c - ref_c) - (pi_r - ref_r)         (the difference of the implicit rewards / beta)
    z_i      = beta * margin_i
    loss_i   = -log sigmoid(z_i) = log(1 + exp(-z_i))  (softplus(-z), never log of a rounded 0)

"mean" averages loss_i over the pairs (0 for no pairs), "sum" adds them, "none" keeps them.
With s_i = sigmoid(-z_i) and scale_i = d loss / d loss_i (g / n, g, or g_i):

    d loss / d pi_c = -beta * s_i * scale_i     d loss / d pi_r = +beta * s_i * scale_i
    d loss / d ref_c = +beta * s_i * scale_i    d loss / d ref_r = -beta * s_i * scale_i

Derivation: docs/backprop.md, "DPO loss". The arguments are checked by ``F.dpo_loss``.
"""
from __future__ import annotations

from ..function import Function


class DPOLoss(Function):
    """pi_c, pi_r, ref_c, ref_r: float arrays of one shape (one entry per pair) -> loss () or that shape."""

    def forward(self, pi_c, pi_r, ref_c, ref_r, beta=0.1, reduction="mean"):
        xp = self.xp
        margin = (pi_c - ref_c) - (pi_r - ref_r)
        z = beta * margin
        losses = xp.logaddexp(0.0, -z).astype(pi_c.dtype, copy=False)   # -log sigmoid(z)
        # s = sigmoid(-z), from e = exp(-|z|) in (0, 1]: no overflow, and exact at z = +-inf
        e = xp.exp(-xp.abs(z))
        self.s = xp.where(z <= 0, 1 / (1 + e), e / (1 + e))
        self.beta, self.reduction, self.n = beta, reduction, losses.size
        if reduction == "none":
            return losses
        total = losses.sum()
        if reduction == "sum" or self.n == 0:
            return total                       # no pairs: 0 (not 0/0), and zero gradients below
        return total / self.n

    def backward(self, g):
        xp = self.xp
        if self.reduction == "none":
            scale = g
        elif self.reduction == "sum" or self.n == 0:
            scale = xp.broadcast_to(g, self.s.shape)
        else:
            scale = xp.broadcast_to(g / self.n, self.s.shape)
        d_pi_c = -self.beta * self.s * scale   # d loss / d pi_c; the other three are +-this
        return d_pi_c, -d_pi_c, -d_pi_c, d_pi_c
