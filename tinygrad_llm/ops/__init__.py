"""Every op, one small Function class each (forward + hand-written backward): the
primitives (elementwise, reduce, matmul, movement) that Tensor methods call, and the
transformer's fused ops (linear, softmax, cross_entropy, norm, activation, embedding,
dropout, attention, self_attention, rope, dpo) that ``tinygrad_llm.nn.functional`` exposes.

This is the reference tier: plain array math, as derived in docs/backprop.md. Ops import
only ``backend``, ``function`` and each other (never ``Tensor``, never the fast kernels of
``tinygrad_llm/kernels/``), and trust their arguments: ``nn.functional`` checks them."""
