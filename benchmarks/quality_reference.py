"""Train nanoGPT's CPU recipe in PyTorch eager on this machine, as a quality reference
for `examples/train_shakespeare.py --preset cpu`, and report the validation loss both
ways we report ours: the 20-batch estimate and a full pass over the validation split.

    python benchmarks/quality_reference.py --data ../shared/data/tinyshakespeare.txt
    python benchmarks/quality_reference.py --gelu tanh --bias true --seed 1

The model is nanoGPT's (written out here); the recipe is the `cpu` preset's.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--gelu", choices=["none", "tanh"], default="none", help="nanoGPT uses the exact GELU")
    p.add_argument("--bias", choices=["true", "false"], default="false", help="nanoGPT's default is false")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--iters", type=int, default=2000)
    args = p.parse_args()
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    n = int(len(ids) * 0.9)
    train, val = torch.from_numpy(ids[:n]), torch.from_numpy(ids[n:])
    V, T, B, C, H, L = len(chars), 64, 12, 128, 4, 4
    bias = args.bias == "true"

    def batch(data, gen=None):
        ix = torch.randint(len(data) - T, (B,), generator=gen)
        return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + T + 1] for i in ix])

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C, bias=bias), nn.LayerNorm(C, bias=bias)
            self.c_attn, self.attn_proj = nn.Linear(C, 3 * C, bias=bias), nn.Linear(C, C, bias=bias)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C, bias=bias), nn.Linear(4 * C, C, bias=bias)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (z.view(b, t, H, C // H).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, C)
            x = x + self.attn_proj(a)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate=args.gelu))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
            self.h = nn.ModuleList([Block() for _ in range(L)])
            self.ln_f = nn.LayerNorm(C, bias=bias)
            self.lm_head = nn.Linear(C, V, bias=False)
            self.wte.weight = self.lm_head.weight
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
            for name, prm in self.named_parameters():
                if name.endswith("proj.weight"):
                    nn.init.normal_(prm, 0.0, 0.02 / math.sqrt(2 * L))

        def forward(self, idx, tgt):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.h:
                x = blk(x)
            return F.cross_entropy(self.lm_head(self.ln_f(x)).view(-1, V), tgt.view(-1))

    model = GPT()
    params = [q for q in model.parameters()]
    opt = torch.optim.AdamW([{"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.1},
                             {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def lr_at(it, lr=1e-3, min_lr=1e-4, warm=100, decay=2000):
        if it < warm:
            return lr * (it + 1) / (warm + 1)
        if it > decay:
            return min_lr
        r = (it - warm) / (decay - warm)
        return min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr)

    @torch.no_grad()
    def evaluate():
        model.eval()
        g = torch.Generator().manual_seed(0)
        est = float(np.mean([model(*batch(val, g)).item() for _ in range(20)]))
        m = (len(val) - 1) // T
        x, y = val[:m * T].view(m, T), val[1:m * T + 1].view(m, T)
        full = sum(model(x[i:i + 64], y[i:i + 64]).item() * len(x[i:i + 64]) for i in range(0, m, 64)) / m
        model.train()
        return est, full

    t0 = time.time()
    for it in range(args.iters + 1):
        if it % 500 == 0 or it == args.iters:
            est, full = evaluate()
            print(f"step {it}: val loss (20 batches) {est:.4f}, full val loss {full:.4f}, {time.time() - t0:.0f} s",
                  flush=True)
        if it == args.iters:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        loss = model(*batch(train))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
