"""Every tuning constant of the fast tier, in one place.

Measured on the project's 2-core development VM (see docs/benchmarks.md for how each was
found and what it is worth). None of them changes a result beyond float rounding: they
only decide how work is cut up and when a shortcut is taken.
"""

#: elements of work per chunk below which ``parallel_for`` runs inline: handing chunks to
#: the pool and waiting for them costs ~80 us, and every NumPy call in a chunk may wait
#: ~20 us for the GIL (the other thread's wake-up), so small work loses
MIN_WORK = 1 << 17

#: when threaded, ``parallel_for``'s ``block`` pieces are enlarged to at least this many
#: elements of work: fewer NumPy calls, fewer GIL hand-offs (each costs more than the cache saves)
MIN_PIECE_WORK = 1 << 18

#: OpenBLAS runs one GEMM of m*n*k above this on several threads itself (its
#: GEMM_MULTITHREAD_THRESHOLD 4 * 65536); ops whose per-chunk GEMMs are bigger stay inline:
#: measured at T=256, hd=64, two Python threads made attention 1.3-1.5x slower
BLAS_THREADED_MNK = 4 * 65536

#: elements per block of the elementwise activations (GELU, SiLU): a few float32 blocks
#: fit in L2 cache, so a chain of NumPy passes reads the block from cache, not from RAM
ACTIVATION_BLOCK = 1 << 15

#: bytes of attention scores per piece of work: about half a core's L2 cache
ATTENTION_PIECE_BYTES = 1 << 19

#: the attention softmax skips subtracting the row max when Cauchy-Schwarz bounds every
#: score by this: e^40 ~ 2e17 and e^-40 ~ 4e-18 are far inside float32's range
NO_SHIFT_LIMIT = 40.0
