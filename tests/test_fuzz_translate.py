"""Property-based input fuzzing of the translators and translate.evaluate (issue 6, part 1)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import translate
from test_fuzz_metrics import SETTINGS, _check_outcome, arrays


@SETTINGS
@given(data=st.data())
def test_evaluate_fuzz(data):
    n = data.draw(st.integers(0, 14))
    Y_hat = data.draw(arrays(n=n))
    Y_true = data.draw(arrays(n=n if data.draw(st.booleans()) else None))
    k = data.draw(st.integers(-1, 16))
    out = _check_outcome(lambda *a, **kw: list(translate.evaluate(*a, **kw).values()), Y_hat, Y_true, k=k)
    if out is not None:
        assert 0 <= out[0] <= 1  # top1


@SETTINGS
@given(data=st.data(), cls=st.sampled_from(["Procrustes", "Linear"]))
def test_paired_translator_fuzz(data, cls):
    n = data.draw(st.integers(0, 14))
    X = data.draw(arrays(n=n))
    Y = data.draw(arrays(n=n if data.draw(st.booleans()) else None))
    t = getattr(translate, cls)()
    fitted = _check_outcome(lambda a, b: t.fit(a, b).d_out_, X, Y)
    Xn = data.draw(arrays())
    if fitted is None:
        _check_outcome(t.transform, Xn)  # unfitted: ValueError naming X / fit
    else:
        out = _check_outcome(t.transform, Xn)
        if out is not None:
            assert out.shape[1] == t.d_out_


@SETTINGS
@given(data=st.data())
def test_vec2vec_bad_input_never_crashes(data):
    X = data.draw(arrays())
    Y = data.draw(arrays())
    t = translate.Vec2Vec(steps=2, batch_size=4, hidden=8, depth=1, latent_dim=4, progress=False)
    _check_outcome(lambda a, b: t.fit(a, b).d_out_, X, Y)
