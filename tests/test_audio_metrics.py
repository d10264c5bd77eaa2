"""Generation metrics: IS / mIS / AM / FID sanity values, mel filterbank, classifier shapes."""

import numpy as np
import pytest
import torch

from mambaseq.audio.features import LogMel, mel_filterbank
from mambaseq.audio.metrics import (DigitClassifier, am_score, classify, frechet_distance, inception_score,
                                    modified_inception_score)
from seeding import rng_for, seed_for
from seeding import current_seed
from tolerances import CLOSE


def _confident(n_per_class: int, n_classes: int = 10) -> np.ndarray:
    return np.repeat(np.eye(n_classes), n_per_class, axis=0)


@pytest.mark.parametrize("n_classes", [10, 4], ids=["c10", "c4"])
def test_is_of_confident_uniform_predictions_is_n_classes(n_classes):
    p = _confident(7, n_classes)
    assert inception_score(p) == pytest.approx(n_classes, rel=1e-9)
    assert am_score(p, np.full(n_classes, 1 / n_classes)) == pytest.approx(0.0, abs=1e-9)


def test_is_and_mis_of_identical_predictions_is_one(request):
    rng = rng_for(request)
    row = rng.dirichlet(np.ones(10))
    p = np.tile(row, (20, 1))
    assert inception_score(p) == pytest.approx(1.0, abs=1e-9)
    assert modified_inception_score(p) == pytest.approx(1.0, abs=1e-9)
    # AM of a single class when training is uniform = KL(uniform || onehot-ish) + H, here large
    assert am_score(_confident(5)[:5], np.full(10, 0.1)) > 5


def test_mis_matches_pairwise_definition(request):
    # mixed with the uniform so that no probability is near the metrics' log-guard EPS (a raw Dirichlet(0.5)
    # draw occasionally has entries ~1e-15, where log(p + EPS) and the pure definition's log(p) differ)
    p = 0.9 * rng_for(request).dirichlet(np.ones(6) * 0.5, size=9) + 0.1 / 6
    kl = [[np.sum(p[i] * (np.log(p[i]) - np.log(p[j]))) for j in range(9)] for i in range(9)]
    assert modified_inception_score(p) == pytest.approx(float(np.exp(np.mean(kl))), rel=1e-6)
    assert 1.0 <= inception_score(p) <= 6.0


def test_fid_identical_zero_and_shift(request):
    f = rng_for(request).normal(size=(500, 16))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # a pure mean shift by v adds |v|^2
    v = np.full(16, 0.5)
    assert frechet_distance(f, f + v) == pytest.approx(float(v @ v), rel=1e-6)
    # a scaled copy: tr(S + s^2 S - 2 s S) = (1 - s)^2 tr(S)
    s = 2.0
    assert frechet_distance(f, f * s) == pytest.approx((1 - s) ** 2 * np.trace(np.cov(f, rowvar=False))
                                                      + np.sum(f.mean(0) ** 2), rel=1e-5)


@pytest.mark.parametrize("bad", [np.ones((3, 4)), -np.eye(3), np.ones(5) / 5], ids=["not_normalised", "negative", "1d"])
def test_bad_probabilities_rejected(bad):
    with pytest.raises(ValueError):
        inception_score(bad)


def test_fid_shape_errors():
    with pytest.raises(ValueError, match="features"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_mel_filterbank_and_tone_peak():
    fb = mel_filterbank(64, 400)
    assert fb.shape == (64, 201) and float(fb.max()) <= 1.0 + 1e-6 and (fb.sum(1) > 0).all()
    t = torch.arange(16000) / 16000
    low, high = LogMel()(torch.stack([torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 3000 * t)]))
    assert low.shape == (64, 101)
    assert int(low.mean(1).argmax()) < int(high.mean(1).argmax())


def test_classifier_shapes_and_position_invariance(request):
    torch.manual_seed(seed_for(request))
    m = DigitClassifier().eval()
    x = torch.randn(3, 16000) * 0.1
    probs, feats = classify(m, x)
    assert probs.shape == (3, 10) and feats.shape == (3, 128)
    np.testing.assert_allclose(probs.sum(1), 1.0, **CLOSE["probability_sum"])
    assert m(x).shape == (3, 10)
