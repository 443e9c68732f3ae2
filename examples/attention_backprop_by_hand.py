"""Backprop through one causal attention head, three ways, side by side.

    python examples/attention_backprop_by_hand.py

A tiny causal self-attention (T = 4 positions, head size D = 3, float64). The loss is
L = sum(G * O) for a fixed random G, so dL/dO = G. Its gradients dQ, dK, dV are
computed

  1. by the engine: ``out.backward(G)`` through the one ScaledDotProductAttention node;
  2. by hand, in NumPy, step by step below (the same formulas as the node's backward
     and as docs/backprop.md, section "Masked scaled dot-product attention");
  3. by central finite differences of L, one element at a time.

It prints them as small tables with the largest differences, and exits with status 1
if any two disagree by 1e-8 or more.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout, uninstalled

from tinygrad_llm import Tensor, cli  # noqa: E402
import tinygrad_llm.nn.functional as F  # noqa: E402

cli.ArgumentParser(description=__doc__).parse_args()   # no options: anything given is an error (and --help)

T, D = 4, 3
scale = 1.0 / np.sqrt(D)
rs = np.random.default_rng(0)
Q, K, V = (rs.standard_normal((T, D)) for _ in range(3))
G = rs.standard_normal((T, D))                       # dL/dO, the gradient arriving from above

# Causal mask M: 0 where query i may see key j (j <= i), -inf where it may not.
M = np.where(np.arange(T)[None, :] <= np.arange(T)[:, None], 0.0, -np.inf)


def forward(Q, K, V):
    """O = softmax(scale Q K^T + M) V, and the intermediates the backward pass needs."""
    S = scale * Q @ K.T + M                          # (T, T) scores; -inf above the diagonal
    E = np.exp(S - S.max(axis=1, keepdims=True))     # stable: every row's max becomes exp(0) = 1
    P = E / E.sum(axis=1, keepdims=True)             # (T, T) rows sum to 1; exactly 0 where masked
    O = P @ V                                        # (T, D)
    return S, P, O


# ---------------------------------------------------------------- 1. the engine
q, k, v = (Tensor(a, requires_grad=True) for a in (Q, K, V))
out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
out.backward(Tensor(G))
engine = {"dQ": q.grad, "dK": k.grad, "dV": v.grad}

# ---------------------------------------------------------------- 2. by hand
S, P, O = forward(Q, K, V)
dO = G
# O = P V, a matrix product: each factor's gradient is dO times the other, transposed.
dV = P.T @ dO                                        # (T, D): dV_j = sum_i P_ij dO_i
dP = dO @ V.T                                        # (T, T): dP_ij = dO_i . V_j
# P_i = softmax(S_i): the Jacobian is diag(P_i) - P_i P_i^T, so for each row
#   dS_ij = P_ij (dP_ij - sum_l dP_il P_il).
# Masked entries have P_ij = 0, hence dS_ij = 0 exactly: no gradient crosses the mask.
rowsum = (dP * P).sum(axis=1, keepdims=True)         # (T, 1)
dS = P * (dP - rowsum)                               # (T, T)
# S = scale Q K^T + M (M is a constant): another matrix product.
dQ = scale * dS @ K                                  # (T, D)
dK = scale * dS.T @ Q                                # (T, D)
by_hand = {"dQ": dQ, "dK": dK, "dV": dV}


# ---------------------------------------------------------------- 3. finite differences
def loss(Q, K, V):
    return float((G * forward(Q, K, V)[2]).sum())


def numeric_grad(which, h=1e-6):
    args = [Q.copy(), K.copy(), V.copy()]
    x = args[which]
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        plus = loss(*args)
        x[idx] = old - h
        minus = loss(*args)
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


numeric = {"dQ": numeric_grad(0), "dK": numeric_grad(1), "dV": numeric_grad(2)}

# ---------------------------------------------------------------- report
np.set_printoptions(precision=5, suppress=True)
print(f"causal attention, T={T}, D={D}, scale=1/sqrt(D)={scale:.5f}, float64\n")
print("P = softmax(S), zero above the diagonal (masked):")
print(P, "\n")
print("dS = P * (dP - rowsum(dP * P)), zero where masked:")
print(dS + 0.0, "\n")                               # + 0.0 turns -0.0 into 0.0

worst = 0.0
for name in ("dQ", "dK", "dV"):
    print(f"{name}:   {'engine':^30} | {'by hand':^30} | {'finite differences':^30}")
    for i in range(T):
        row = " | ".join(" ".join(f"{x:+9.5f}" for x in src[name][i]) for src in (engine, by_hand, numeric))
        print(f"  row {i}  {row}")
    pairs = (("engine", engine, "by hand", by_hand), ("engine", engine, "finite diff", numeric),
             ("by hand", by_hand, "finite diff", numeric))
    for an, a, bn, b in pairs:
        d = float(np.abs(a[name] - b[name]).max())
        worst = max(worst, d)
        print(f"  max |{an} - {bn}| = {d:.2e}")
    print()

if worst < 1e-8:
    print(f"all three agree: largest difference {worst:.2e} < 1e-8")
    sys.exit(0)
print(f"DISAGREEMENT: largest difference {worst:.2e} >= 1e-8")
sys.exit(1)
