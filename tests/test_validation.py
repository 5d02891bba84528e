import numpy as np
import pytest
import torch

from align.validation import as_matrix, check_choice, check_k, check_nonconstant_columns, check_paired, check_real


def test_accepts_arrays_tensors_lists_and_widens_half():
    ref = np.arange(6, dtype=np.float32).reshape(3, 2) + 1
    for x in (ref, torch.from_numpy(ref), ref.tolist(), ref.astype(np.float16), torch.from_numpy(ref).bfloat16()):
        out = as_matrix(x, "X")
        assert out.dtype in (np.float32, np.float64) and out.flags.c_contiguous
        np.testing.assert_allclose(out, ref)
    assert as_matrix(ref.astype(np.float64), "X").dtype == np.float64
    assert as_matrix(np.asfortranarray(ref), "X", dtype=np.float64).flags.c_contiguous


@pytest.mark.parametrize(
    "value, match",
    [
        (np.array([[1, 2], [3, 4]]), "X has integer dtype"),
        (np.array([[True, False]]), "boolean"),
        (np.array([[1.0, "a"]], dtype=object), "dtype object"),
        (np.array([[1 + 1j]]), "complex"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros((3, 0)), "empty"),
        (np.zeros(3), "must be 2-D"),
        (np.zeros((2, 2, 2)), "reshape"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.array([[np.inf, 1.0]]), "Inf"),
        ([[1.0, 2.0], [3.0]], "rectangular"),
    ],
)
def test_rejects_bad_input_naming_the_argument(value, match):
    with pytest.raises(ValueError, match=match) as exc:
        as_matrix(value, "X")
    assert "X" in str(exc.value)


def test_non_array_is_type_error():
    for bad in ("abc", None, 3.0):
        with pytest.raises(TypeError, match="X must be a 2-D array"):
            as_matrix(bad, "X")


def test_small_checks():
    with pytest.raises(ValueError, match="at least 4"):
        as_matrix(np.ones((3, 2)), "X", min_rows=4)
    with pytest.raises(ValueError, match="same number of rows"):
        check_paired(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="k=5 is too large for 5 samples"):
        check_k(5, 5)
    assert check_k(5, 5, exclude_self=False) == 5
    with pytest.raises(ValueError, match="must be an integer"):
        check_k(True, 5)
    with pytest.raises(ValueError, match="kernel must be one of"):
        check_choice("poly", "kernel", ["linear", "rbf"])
    with pytest.raises(ValueError, match="constant column"):
        check_nonconstant_columns(np.c_[np.arange(4.0), np.ones(4)], "Y")


@pytest.mark.parametrize(
    "value, kw, match",
    [
        (0.0, dict(low=0, open_low=True), r"eps must be a finite number > 0, got 0\.0"),
        (-1, dict(low=0), r"eps must be a finite number >= 0, got -1"),
        (1.0, dict(low=0, high=1, open_low=True, open_high=True), r"> 0 and < 1, got 1\.0"),
        (2, dict(high=1), r"<= 1, got 2"),
        (float("nan"), {}, "eps must be a finite number, got nan"),
        (float("inf"), dict(low=0), "got inf"),
        (True, {}, "got True"),
        ("0.1", {}, "got '0.1'"),
    ],
)
def test_check_real_refuses(value, kw, match):
    with pytest.raises(ValueError, match=match):
        check_real(value, "eps", **kw)


def test_check_real_accepts_bounds_and_numpy_scalars():
    assert check_real(0, "x", low=0) == 0.0
    assert check_real(1, "x", 0, 1) == 1.0
    assert check_real(np.float32(0.25), "x", 0, 1, open_low=True, open_high=True) == 0.25
    assert isinstance(check_real(3, "x"), float)
