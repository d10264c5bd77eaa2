"""Shared sampler: top-k / top-p / temperature correctness, recorded log-likelihood, prefill-then-step."""

import math

import pytest
import torch

from mambaseq.config import MambaConfig
from mambaseq.generation import draw_tokens, filter_logits, sample, sequence_loglik
from mambaseq.model import MambaLMHeadModel
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM
from seeding import current_seed
from tolerances import CLOSE, SAMPLING_FREQUENCY


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # hundreds of tiny step ops


def _rand_logits(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(current_seed())) * 3


@pytest.mark.parametrize("k", [1, 3, 17, 64, 0], ids=lambda k: f"k{k}")
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = _rand_logits(5, 64)
    out = filter_logits(logits, top_k=k)
    kept = torch.isfinite(out)
    assert (kept.sum(-1) == (k or 64)).all()
    top = torch.topk(logits, k or 64, -1).indices
    assert kept.gather(-1, top).all()
    assert torch.equal(out[kept], logits[kept])


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999, 1.0], ids=lambda p: f"p{p}")
def test_top_p_keeps_smallest_set_reaching_p(p):
    logits = _rand_logits(6, 40)
    kept = torch.isfinite(filter_logits(logits, top_p=p))
    probs = logits.softmax(-1)
    for row in range(6):  # brute force: walk the sorted probabilities until the mass reaches p
        order = probs[row].argsort(descending=True)
        mass, want = 0.0, set()
        for i in order.tolist():
            if mass >= p and p < 1.0:
                break
            want.add(i)
            mass += probs[row, i].item()
        assert set(torch.nonzero(kept[row]).flatten().tolist()) == want


def test_temperature_and_combined_filters():
    logits = _rand_logits(2, 30)
    torch.testing.assert_close(filter_logits(logits, temperature=0.5), logits * 2)
    both = torch.isfinite(filter_logits(logits, top_k=10, top_p=0.5))
    assert (both.sum(-1) <= 10).all() and (both.sum(-1) >= 1).all()


@pytest.mark.parametrize("kw", [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8)], ids=["temp", "topk", "topp"])
def test_draw_frequencies_match_filtered_distribution(kw):
    logits = _rand_logits(1, 12).expand(40_000, 12)
    tok, model_lp, sample_lp = draw_tokens(logits, **kw, generator=torch.Generator().manual_seed(1))
    want = filter_logits(logits[:1], **kw).softmax(-1)[0]
    freq = torch.bincount(tok, minlength=12).float() / tok.numel()
    assert (freq[want == 0] == 0).all()  # filtered tokens are never drawn
    assert (freq - want).abs().max() < SAMPLING_FREQUENCY
    torch.testing.assert_close(model_lp, logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1))
    torch.testing.assert_close(sample_lp, want.log().expand(40_000, 12).gather(-1, tok[:, None]).squeeze(-1))


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)],
                         ids=["temp0", "k_neg", "p0", "p_big"])
def test_bad_sampling_arguments(bad):
    with pytest.raises(ValueError):
        filter_logits(torch.zeros(1, 4), **bad)


def _models():
    torch.manual_seed(0)
    return {
        "mamba-real": MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=256)),
        "mamba-complex": MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=256, complex=True)),
        "sashimi": SaShiMiLM(SaShiMiConfig(d_model=8, n_layer=1, d_state=4, pool=(2, 2))),
    }


@pytest.mark.parametrize("name", ["mamba-real", "mamba-complex", "sashimi"])
def test_recorded_loglik_matches_parallel_forward(name):
    model = _models()[name]
    out = sample(model, 23, batch_size=3, start_token=128, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.tokens.shape == (3, 23)
    torch.testing.assert_close(out.loglik, sequence_loglik(model, out.tokens, start_token=128), **CLOSE["fp32_loglik"])
    torch.testing.assert_close(out.loglik, out.sample_logprob, **CLOSE["fp32_loglik"])  # T=1, no filter
    assert torch.allclose(out.bits_per_token, -out.loglik / (23 * math.log(2)))

    prefix = torch.randint(0, 256, (2, 9))
    out = sample(model, 11, prefix=prefix, top_k=20, return_prefix=True, progress=False)
    assert out.tokens.shape == (2, 20) and torch.equal(out.tokens[:, :9], prefix)
    logp = model(out.tokens[:, :-1]).log_softmax(-1).gather(-1, out.tokens[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(out.loglik, logp[:, 8:].sum(-1), **CLOSE["fp32_loglik"])


class _Counting(torch.nn.Module):
    """Wraps a model and counts how it is called, to check prefill-once-then-step."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.forward_lengths, self.steps = inner, [], 0

    def allocate_inference_cache(self, b):
        return self.inner.allocate_inference_cache(b)

    def forward(self, ids, cache=None):
        self.forward_lengths.append(ids.shape[1])
        return self.inner(ids, cache=cache)

    def step(self, ids, cache):
        assert ids.shape == (ids.shape[0],)
        self.steps += 1
        return self.inner.step(ids, cache)


def test_prefix_is_consumed_once_in_parallel_then_stepped():
    m = _Counting(_models()["mamba-real"])
    sample(m, 7, prefix=torch.randint(0, 256, (4, 13)), progress=False)
    assert m.forward_lengths == [13] and m.steps == 6


def test_greedy_is_deterministic_and_seeded_sampling_reproducible():
    model = _models()["mamba-complex"]
    a = sample(model, 15, batch_size=2, start_token=128, top_k=1, progress=False).tokens
    assert torch.equal(a[0], a[1])
    s1 = sample(model, 15, batch_size=2, start_token=128, generator=torch.Generator().manual_seed(5), progress=False)
    s2 = sample(model, 15, batch_size=2, start_token=128, generator=torch.Generator().manual_seed(5), progress=False)
    assert torch.equal(s1.tokens, s2.tokens)


def test_sample_argument_errors():
    model = _models()["mamba-real"]
    with pytest.raises(ValueError, match="start_token"):
        sample(model, 5, batch_size=2)
    with pytest.raises(ValueError, match="prefix"):
        sample(model, 5, prefix=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_new"):
        sample(model, 0, batch_size=1, start_token=0)
