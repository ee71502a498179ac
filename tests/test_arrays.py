"""slotssm.arrays: the one numpy conversion (metrics, viz) and the one float-tensor check (scans, Mamba, models)."""

import numpy as np
import pytest
import torch

from slotssm.arrays import check_float, to_numpy


def test_to_numpy_keeps_dtypes_unless_asked_for_float32():
    t = torch.arange(6, dtype=torch.float64).view(2, 3).requires_grad_()
    assert to_numpy(t).dtype == np.float64 and (to_numpy(t) == np.arange(6).reshape(2, 3)).all()
    assert to_numpy(t, float32=True).dtype == np.float32
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16), float32=True).dtype == np.float32  # numpy has no bfloat16
    assert to_numpy(torch.arange(3), float32=True).dtype == np.int64  # integers are left alone
    assert to_numpy(np.ones(2, np.float64), float32=True).dtype == np.float64  # arrays are left alone
    assert to_numpy([1, 2]).tolist() == [1, 2]


def test_check_float_names_the_argument_and_the_legend():
    check_float("x", torch.zeros(2))
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor \(B, D\), got list$"):
        check_float("x", [1.0], "(B, D)")
    with pytest.raises(ValueError, match=r"^u: expected a floating-point tensor, got dtype torch.int64$"):
        check_float("u", torch.zeros(2, dtype=torch.long))
