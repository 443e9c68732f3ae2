"""The primitive ops, one small class per op (see ``Function``): elementwise, reduce,
matmul and movement. The transformer's fused ops live in ``tinygrad_llm.nn.functional``."""
