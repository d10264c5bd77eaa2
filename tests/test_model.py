"""Model: parallel == recurrent (real and complex), prefill-then-step, checkpoints, the drop-in Mamba signature."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mambaseq import (
    Mamba,
    MambaConfig,
    MambaForSequenceClassification,
    MambaLMHeadModel,
    load_pretrained,
)
from tolerances import CLOSE

KINDS = [False, True]
KIND_IDS = ["real", "cplx"]


def _lm(cplx: bool, seed: int = 0, **kw) -> MambaLMHeadModel:
    torch.manual_seed(seed)
    return MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=11, complex=cplx, **kw)).eval()


@pytest.mark.parametrize("cplx", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("L", [1, 5, 37])
def test_stepping_equals_parallel_forward(cplx, L):
    model = _lm(cplx)
    ids = torch.randint(0, 11, (3, L), generator=torch.Generator().manual_seed(L))
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_inference_cache(3)
        stepped = torch.stack([model.step(ids[:, t], cache) for t in range(L)], dim=1)
    torch.testing.assert_close(stepped, full, **CLOSE["fp32_step_vs_parallel"])


@pytest.mark.parametrize("cplx", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("prefix", [1, 3, 20])
def test_prefill_then_step(cplx, prefix):
    model = _lm(cplx, seed=1)
    ids = torch.randint(0, 11, (2, 29), generator=torch.Generator().manual_seed(prefix))
    with torch.no_grad():
        full = model(ids)
        cache = model.allocate_inference_cache(2)
        pre = model(ids[:, :prefix], cache=cache)
        rest = torch.stack([model.step(ids[:, t], cache) for t in range(prefix, 29)], dim=1)
    torch.testing.assert_close(pre, full[:, :prefix], **CLOSE["fp32_prefix"])
    torch.testing.assert_close(rest, full[:, prefix:], **CLOSE["fp32_step_vs_parallel"])


def test_cache_is_constant_size():
    model = _lm(False)
    cache = model.allocate_inference_cache(2)
    sizes = [(c.conv_state.shape, c.ssm_state.shape) for c in cache]
    with torch.no_grad():
        for t in range(50):
            model.step(torch.full((2,), t % 11), cache)
    assert sizes == [(c.conv_state.shape, c.ssm_state.shape) for c in cache]


@pytest.mark.parametrize("cplx", KINDS, ids=KIND_IDS)
def test_save_load_round_trip_is_bit_exact(tmp_path, cplx):
    model = _lm(cplx, seed=2)
    ids = torch.randint(0, 11, (2, 17))
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["architecture"] == "MambaLMHeadModel" and meta["complex"] == cplx
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is MambaLMHeadModel
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight  # ties survive the round trip
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids), model(ids))
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_classifier_from_pretrained_lm_keeps_backbone(tmp_path):
    lm = _lm(False, seed=3)
    lm.save_pretrained(tmp_path)
    clf = MambaForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    for k, v in lm.backbone.state_dict().items():
        assert torch.equal(v, clf.backbone.state_dict()[k]), k
    assert clf(torch.randint(0, 11, (4, 9))).shape == (4, 5)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_pooling(pooling):
    torch.manual_seed(0)
    cfg = MambaConfig.from_name("debug", vocab_size=8, num_labels=3, pooling=pooling)
    clf = MambaForSequenceClassification(cfg).eval()
    torch.nn.init.normal_(clf.head.weight)  # the head starts at zero; give it weights to see the pooling
    ids = torch.randint(0, 8, (2, 12))
    with torch.no_grad():
        h = clf.backbone(ids)
        want = clf.head(clf.pool_norm(h[:, -1] if pooling == "last" else h.mean(1)))
        torch.testing.assert_close(clf(ids), want)
    if pooling == "last":  # causal: the logits depend on every position, and only on the past
        ids2 = ids.clone()
        ids2[:, 0] = (ids2[:, 0] + 1) % 8
        assert not torch.allclose(clf(ids2), clf(ids))


def test_mamba_is_a_drop_in_module():
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=16, d_conv=4, expand=2)
    x = torch.randn(2, 64, 16, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    # causality: changing the future does not change the past
    x2 = x.detach().clone()
    x2[:, 40:] += 1
    torch.testing.assert_close(m(x2)[:, :40], y[:, :40].detach())


def test_inits_follow_the_paper():
    m = Mamba(d_model=32, d_state=8, dt_min=1e-3, dt_max=1e-1)
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 1e-1 + 1e-6
    torch.testing.assert_close(m.A()[0], -torch.arange(1, 9, dtype=torch.float32))  # S4D-Real
    mc = Mamba(d_model=32, d_state=8, complex=True)
    A = mc.A()
    assert A.dtype == torch.complex64
    torch.testing.assert_close(A.real[0], torch.full((8,), -0.5))  # S4D-Lin
    torch.testing.assert_close(A.imag[0], torch.pi * torch.arange(8, dtype=torch.float32))
    assert all(p.dtype == torch.float32 for p in mc.parameters())  # stored as real tensors
    flagged = {n for n, p in mc.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert flagged == {"A_log", "A_imag", "D", "dt_proj.bias"}


def test_activation_checkpointing_gives_the_same_gradients():
    ids = torch.randint(0, 11, (2, 20))
    grads = []
    for ckpt in (False, True):
        model = _lm(False, seed=4, checkpoint_activations=ckpt).train()
        model(ids).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(d_model=0), "d_model must be a positive int"),
        (dict(norm="batch"), "norm must be"),
        (dict(pooling="max"), "pooling must be"),
        (dict(backend="cuda"), "backend must be"),
        (dict(dt_min=0.2, dt_max=0.1), "dt_min <= dt_max"),
    ],
    ids=["d_model", "norm", "pooling", "backend", "dt-range"],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MambaConfig(**kw)


def test_named_sizes_and_bad_inputs(tmp_path):
    assert MambaConfig.from_name("debug").d_model == 16
    with pytest.raises(ValueError, match="unknown model size"):
        MambaConfig.from_name("gigantic")
    with pytest.raises(ValueError, match="input_ids must be"):
        _lm(False)(torch.randn(2, 5))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)


# --- classifier signal path and k-mer tokens (issue 10) -------------------------------------------------
from mambaseq.model import KmerProfileHead, kmer_ids  # noqa: E402
from seeding import seed_for  # noqa: E402


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_kmer_ids_equal_brute_force(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randint(0, 6, (3, 40), generator=g)  # 4 and 5 (N, PAD) are not bases
    got = kmer_ids(x, k)
    for b in range(3):
        for t in range(40):
            win = x[b, t - k + 1 : t + 1].tolist() if t >= k - 1 else None
            want = 4**k if win is None or max(win) > 3 else sum(v * 4 ** (k - 1 - i) for i, v in enumerate(win))
            assert int(got[b, t]) == want, (b, t)


@pytest.mark.parametrize("wide", [0, 3], ids=["deep", "wide3"])
@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("kmer", [1, 6])
def test_classifier_starts_at_ln_k_and_learns_its_head(norm, kmer, wide):
    cfg = MambaConfig.from_name("debug", vocab_size=10, num_labels=5, classifier_norm=norm, kmer_size=kmer,
                                wide_kmer_size=wide)
    torch.manual_seed(0)
    clf = MambaForSequenceClassification(cfg)
    x, y = torch.randint(0, 4, (6, 64)), torch.arange(6) % 5
    loss = torch.nn.functional.cross_entropy(clf(x), y)
    assert float(loss.detach()) == pytest.approx(math.log(5), abs=1e-6)  # zero-initialised head: exactly ln K
    loss.backward()
    assert clf.head.weight.grad.abs().sum() > 0  # the head learns first; the backbone follows
    if wide:
        assert clf.wide.linear.weight.grad.abs().sum() > 0
    clf.eval()
    assert clf(x).shape == (6, 5)


def test_kmer_profile_head_counts_every_kmer_once(request):
    k = 2
    x = torch.randint(0, 5, (3, 50), generator=torch.Generator().manual_seed(seed_for(request)))  # 4 = N
    prof = KmerProfileHead(k, 5).profile(x)
    assert prof.shape == (3, 4**k + 1)
    assert torch.allclose(prof.sum(1), torch.ones(3))
    for b in range(3):
        want = torch.bincount(kmer_ids(x[b : b + 1], k)[0], minlength=4**k + 1).float() / 50
        assert torch.equal(prof[b], want)
    # the N/edge bin: the first k - 1 positions plus every k-mer holding an N
    n_bad = sum(1 for t in range(50) if t < k - 1 or (x[0, t - k + 1 : t + 1] > 3).any())
    assert prof[0, -1] * 50 == n_bad


def test_wide_standardizer_is_a_standard_scaler_fitted_once():
    """wide_standardize='fit': fit_standardizer gives sklearn StandardScaler's mean/variance of the training
    profiles; training neither uses batch statistics nor moves them; the checkpoint carries them; an unfitted
    head refuses to run."""
    from sklearn.preprocessing import StandardScaler

    from mambaseq.model import KmerProfileHead

    g = torch.Generator().manual_seed(7)
    head = KmerProfileHead(2, 3, standardize="fit")
    x = torch.randint(0, 4, (40, 64), generator=g)
    with pytest.raises(RuntimeError, match="fit_standardizer"):
        head(x)
    head.fit_standardizer(x, chunk=7)
    sc = StandardScaler().fit(head.profile(x).double().numpy())
    torch.testing.assert_close(head.norm.running_mean.double(), torch.from_numpy(sc.mean_), **CLOSE["fp32_batchnorm"])
    torch.testing.assert_close(head.norm.running_var.double().sqrt(), torch.from_numpy(sc.scale_),
                               **CLOSE["fp32_batchnorm"])
    before = head.norm.running_mean.clone()
    head.train()
    y = head.norm(head.profile(x[:4]))
    want = (head.profile(x[:4]) - before) / (head.norm.running_var + head.norm.eps).sqrt()
    torch.testing.assert_close(y, want, **CLOSE["fp32_batchnorm"])
    torch.testing.assert_close(head.norm.running_mean, before, **CLOSE["exact"])
    again = KmerProfileHead(2, 3, standardize="fit")
    again.load_state_dict(head.state_dict())
    again.eval()
    torch.testing.assert_close(again(x), head.eval()(x), **CLOSE["exact"])
    with pytest.raises(ValueError, match="n >= 2"):
        head.fit_standardizer(x[:1])
    with pytest.raises(ValueError, match="wide_standardize"):
        MambaConfig.from_name("debug", wide_standardize="running")


def test_wide_kmer_size_is_validated():
    with pytest.raises(ValueError, match="wide_kmer_size"):
        MambaConfig.from_name("debug", wide_kmer_size=9)
    with pytest.raises(ValueError, match="wide_kmer_size"):
        MambaConfig.from_name("debug", wide_kmer_size=4, rc_equivariant=True)


def test_kmer_size_is_validated():
    with pytest.raises(ValueError, match="kmer_size"):
        MambaConfig.from_name("debug", kmer_size=9)
    with pytest.raises(ValueError, match="kmer_size"):
        MambaConfig.from_name("debug", kmer_size=6, rc_equivariant=True)
    lm = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10, kmer_size=3))
    with pytest.raises(NotImplementedError, match="kmer_size"):
        lm.step(torch.zeros(1, dtype=torch.long), lm.allocate_inference_cache(1))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_pooled_batch_norm_small_batches_use_running_statistics(request, n):
    from mambaseq.model import PooledBatchNorm

    g = torch.Generator().manual_seed(seed_for(request))
    bn = PooledBatchNorm(5)
    x = torch.randn(n, 5, generator=g) * 3 + 1
    y = bn.train()(x)
    if n >= PooledBatchNorm.min_batch_stats:  # batch statistics, as BatchNorm1d
        assert torch.allclose(y.mean(0), torch.zeros(5), **CLOSE["fp32_batchnorm"])
    else:  # running statistics, updated first: the training output is what evaluation gives
        assert torch.allclose(y, bn.eval()(x), **CLOSE["fp32_batchnorm"])
        assert torch.allclose(bn.running_mean, 0.1 * x.mean(0), **CLOSE["fp32_batchnorm"])
        want_var = torch.ones(5) if n == 1 else 0.9 + 0.1 * x.var(0, unbiased=True)
        assert torch.allclose(bn.running_var, want_var, **CLOSE["fp32_batchnorm"])
    if n == 2:  # what batch statistics would have done: every feature exactly -1 or +1
        plain = torch.nn.BatchNorm1d(5, eps=1e-9).train()(x)
        assert torch.allclose(plain.abs(), torch.ones(n, 5), **CLOSE["fp32_batchnorm"])
