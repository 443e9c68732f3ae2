"""Every op, one small Function class each (forward + hand-written backward): the
primitives (elementwise, reduce, matmul, movement) that Tensor methods call, and the
transformer's fused ops (linear, softmax, cross_entropy, norm, activation, embedding,
dropout, attention, self_attention) that ``tinygrad_llm.nn.functional`` exposes."""
