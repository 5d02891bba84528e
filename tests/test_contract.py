"""The estimator contract, checked the same way on every estimator of reptrans.

For each translator (Procrustes, Linear, Isometric with both geometric
initialisations, Vec2Vec, CycleGAN), for align.ContrastiveAligner and, where it
applies, align.RepaTrainer:

- ``fit`` returns the estimator itself;
- ``sklearn.base.clone`` gives an unfitted estimator with equal ``get_params()``;
- ``set_params`` round-trips, and an unknown name raises ValueError;
- save -> load (``translate.load`` and the class's ``load``) gives identical outputs;
- a refit with the same seed gives identical outputs;
- using the estimator before ``fit`` raises ``NotFittedError`` (a ValueError and an
  AttributeError, as scikit-learn's).

Data and models are tiny (16-d, 600 rows a side; a few training steps): these tests
check the contract, not the quality of a map.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, NamedTuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from sklearn.base import clone  # noqa: E402

import align  # noqa: E402
import translate  # noqa: E402
from synthetic import ISO_FAST, V2V_FAST, clustered_spaces, torch_threads  # noqa: E402
from translate.base import NotFittedError, Translator  # noqa: E402


class Spec(NamedTuple):
    make: Callable[[], Any]  # an unfitted estimator
    data: str  # "paired" (rows of X and Y are the same items) or "unpaired"
    change: Dict[str, Any]  # a parameter change for the set_params test


SPECS: Dict[str, Spec] = {
    "Procrustes": Spec(lambda: translate.Procrustes(), "paired", {"scale": False}),
    "Linear": Spec(lambda: translate.Linear(alpha=0.1), "paired", {"alpha": 2.0}),
    "Isometric-signature": Spec(lambda: translate.Isometric(init="signature", seed=1, **ISO_FAST), "unpaired",
                                {"seed": 5}),
    "Isometric-anchors": Spec(lambda: translate.Isometric(init="anchors", seed=1, **ISO_FAST), "unpaired",
                              {"seed": 5}),
    "Vec2Vec": Spec(lambda: translate.Vec2Vec(seed=1, **V2V_FAST), "unpaired", {"steps": 7}),
    "CycleGAN": Spec(lambda: translate.CycleGAN(seed=1, **V2V_FAST), "unpaired", {"steps": 7}),
    "ContrastiveAligner": Spec(
        lambda: align.ContrastiveAligner(dim=8, epochs=2, batch_size=64, hidden=16, seed=1, progress=False),
        "paired", {"dim": 4}),
}
NAMES = list(SPECS)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


DATA = clustered_spaces()


def _fit(est, kind: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Isometric: "restarts did not agree" on tiny data
        return est.fit(DATA["X"], DATA["Y_paired" if kind == "paired" else "Y_unpaired"])


def _outputs(est) -> Dict[str, np.ndarray]:
    """What a fitted estimator computes on held-out rows."""
    if isinstance(est, Translator):
        return {"transform": est.transform(DATA["X_test"])}
    return {"transform_a": est.transform_a(DATA["X_test"]), "transform_b": est.transform_b(DATA["Y_test"])}


def _assert_same_outputs(a, b) -> None:
    oa, ob = _outputs(a), _outputs(b)
    assert oa.keys() == ob.keys()
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)


_FITTED: Dict[str, Any] = {}


def _fitted(name: str):
    """(the estimator, what its fit returned): fitted once per module."""
    if name not in _FITTED:
        est = SPECS[name].make()
        _FITTED[name] = (est, _fit(est, SPECS[name].data))
    return _FITTED[name]


def _params_equal(a, b) -> None:
    assert repr(a.get_params()) == repr(b.get_params())
    assert repr(a.get_params(deep=False)) == repr(b.get_params(deep=False))


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self(name):
    est, returned = _fitted(name)
    assert returned is est


@pytest.mark.parametrize("name", NAMES)
def test_clone_is_unfitted_with_equal_params(name):
    fitted = _fitted(name)[0]
    c = clone(fitted)
    assert type(c) is type(fitted) and c is not fitted
    _params_equal(c, fitted)
    with pytest.raises(NotFittedError, match="not fitted"):
        _outputs(c)
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(c)), "clone kept learned attributes"


@pytest.mark.parametrize("name", NAMES)
def test_set_params_round_trips_and_refuses_unknown_names(name):
    spec = SPECS[name]
    est = spec.make()
    params = est.get_params()
    copy = clone(est)
    assert copy.set_params(**params) is copy
    _params_equal(copy, est)
    copy.set_params(**spec.change)
    for key, value in spec.change.items():
        assert copy.get_params()[key] == value and getattr(copy, key) == value
        assert clone(copy).get_params()[key] == value
    assert {k: v for k, v in copy.get_params().items() if k not in spec.change} == \
        {k: v for k, v in params.items() if k not in spec.change}
    before = repr(est.get_params())
    with pytest.raises(ValueError, match=rf"{type(est).__name__} has no parameter 'no_such_option'; valid: .*"):
        est.set_params(no_such_option=1)
    assert repr(est.get_params()) == before
    assert repr(est).startswith(f"{type(est).__name__}(")


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_identical_outputs(name, tmp_path):
    fitted = _fitted(name)[0]
    fitted.save(tmp_path / "m")
    by_class = type(fitted).load(tmp_path / "m")
    assert type(by_class) is type(fitted)
    _assert_same_outputs(fitted, by_class)
    if isinstance(fitted, Translator):
        anywhere = translate.load(tmp_path / "m")
        assert type(anywhere) is type(fitted)
        _params_equal(anywhere, fitted)
        _assert_same_outputs(fitted, anywhere)


@pytest.mark.parametrize("name", NAMES)
def test_refit_with_the_same_seed_is_deterministic(name):
    fitted = _fitted(name)[0]
    again = _fit(clone(fitted), SPECS[name].data)
    _assert_same_outputs(fitted, again)


@pytest.mark.parametrize("name", NAMES)
def test_use_before_fit_raises_not_fitted(name):
    est = SPECS[name].make()
    with pytest.raises(NotFittedError, match="not fitted") as info:
        _outputs(est)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)
    with pytest.raises(NotFittedError):
        est.save("never-written")


# -- RepaTrainer: estimator-like (fit returns self, parameters, determinism); it trains a
# model in place, so it has no transform and saves nothing of its own


def _repa_setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    projector = align.RepaProjector(16, 8, hidden=8)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 16)).astype(np.float32)
    y = (X[:, :3].argmax(1)).astype(np.int64)
    T = rng.standard_normal((64, 8)).astype(np.float32)
    return model, projector, X, y, T


def test_repa_trainer_contract():
    est = align.RepaTrainer(epochs=2, batch_size=16, seed=3, progress=False)
    c = clone(est)
    _params_equal(c, est)
    assert c.set_params(lam=0.25) is c and c.lam == 0.25 and clone(c).lam == 0.25
    with pytest.raises(ValueError, match="RepaTrainer has no parameter 'no_such_option'"):
        est.set_params(no_such_option=1)
    runs = []
    for _ in range(2):
        model, proj, X, y, T = _repa_setup()
        trainer = clone(est)
        assert trainer.fit(model, proj, "0", X, y, T) is trainer
        runs.append((trainer.history_, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
