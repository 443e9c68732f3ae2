"""erf (ops/erf.py, NumPy has none): against math.erf in float64 and float32, special
values, bad input. GELU's exact form (test_activation.py) is its user."""
import math

import numpy as np
import pytest

from tinygrad_llm.ops.erf import erf


def test_erf_matches_math_erf_float64():
    xs = np.concatenate([np.linspace(-7, 7, 40001), np.geomspace(1e-300, 1, 500), -np.geomspace(1e-300, 1, 500),
                         [0.84375, 0.99999999, 1.0, 2.0, 3.5, 3.9, 4.0, 5.9, 6.0, 6.1, 27.0, 1e300]])
    ref = np.array([math.erf(v) for v in xs])
    got = erf(xs)
    assert got.dtype == np.float64
    err = np.abs(got - ref)
    assert err.max() <= 1e-15
    assert (err <= 4 * np.spacing(np.abs(ref))).all()       # a few units in the last place
    # near 0 erf(x) ~ 2x/sqrt(pi): the relative error stays small for tiny x
    tiny = np.geomspace(1e-300, 1e-8, 50)
    np.testing.assert_allclose(erf(tiny), tiny * 2 / math.sqrt(math.pi), rtol=1e-15)


def test_erf_matches_math_erf_float32():
    xs = np.concatenate([np.linspace(-5, 5, 20001), np.geomspace(1e-30, 1, 200)]).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in xs])
    got = erf(xs)
    assert got.dtype == np.float32
    ulp32 = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - ref) <= 2 * ulp32).all()
    assert erf(np.float16([0.5, -2.0])).dtype == np.float16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_special_values(dtype):
    got = erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype))
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert not np.signbit(got[0]) and np.signbit(got[1])
    assert np.isnan(got[4])
    np.testing.assert_array_equal(erf(np.array([], dtype=dtype)), [])
    with pytest.raises(TypeError, match="floating-point"):
        erf(np.arange(3))
