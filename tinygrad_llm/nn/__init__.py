"""Neural-network building blocks: ``functional`` (fused ops with hand-written backward
passes) and modules built on them."""
from . import functional  # noqa: F401
