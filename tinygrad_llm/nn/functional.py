"""The transformer's ops as functions, with PyTorch's signatures (``import tinygrad_llm.nn.functional as F``).

Each function here is one graph node; its forward and hand-written backward live in
``tinygrad_llm/ops/``.
"""
