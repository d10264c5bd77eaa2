"""SaShiMi multi-scale backbone: causal, stepping == parallel (fresh and after prefill), checkpoints."""

import pytest
import torch

from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM
from seeding import current_seed
from tolerances import CLOSE

CASES = [  # (complex, pool, L): L not a multiple of the total pool on purpose, plus L shorter than one pool
    (False, (4, 4), 71),
    (True, (4, 4), 71),
    (True, (4, 4), 3),
    (False, (2, 3), 40),
    (True, (4,), 33),
]
IDS = [f"{'cplx' if c else 'real'}-pool{'x'.join(map(str, p))}-L{L}" for c, p, L in CASES]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # hundreds of tiny step ops


def _model(complex_, pool):
    torch.manual_seed(current_seed())
    return SaShiMiLM(SaShiMiConfig(d_model=8, n_layer=1, d_state=4, pool=pool, complex=complex_)).eval()


@pytest.mark.parametrize("complex_,pool,L", CASES, ids=IDS)
def test_step_equals_parallel(complex_, pool, L):
    m = _model(complex_, pool)
    x = torch.randint(0, 256, (2, L))
    with torch.no_grad():
        full = m(x)
        cache = m.allocate_inference_cache(2)
        stepped = torch.stack([m.step(x[:, t], cache) for t in range(L)], 1)
        torch.testing.assert_close(stepped, full, **CLOSE["fp32_step_vs_parallel"])
        split = L // 2 + 1  # prefill an awkward length, then step the rest
        cache = m.allocate_inference_cache(2)
        torch.testing.assert_close(m(x[:, :split], cache=cache), full[:, :split], **CLOSE["fp32_step_vs_parallel"])
        rest = [m.step(x[:, t], cache) for t in range(split, L)]
        if rest:
            torch.testing.assert_close(torch.stack(rest, 1), full[:, split:], **CLOSE["fp32_step_vs_parallel"])


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "cplx"])
def test_causal(complex_):
    m = _model(complex_, (4, 4))
    x = torch.randint(0, 256, (1, 80))
    t = int(torch.randint(1, 79, ()))
    x2 = x.clone()
    x2[0, t] = (x2[0, t] + 1) % 256
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.equal(a[:, :t], b[:, :t])  # outputs before t never see token t
    assert (a[:, t:] - b[:, t:]).abs().max() > 0


def test_cache_memory_is_bounded():
    m = _model(True, (4, 4))
    cache = m.allocate_inference_cache(1)

    def nbytes(c):
        tot = sum(t.numel() for mc in c.down + c.up for t in (mc.conv_state, mc.ssm_state))
        tot += sum(t.numel() for t in (c.fold, c.unfold) if t is not None)
        return tot + (nbytes(c.inner) if c.inner else 0)

    before = nbytes(cache)
    with torch.no_grad():
        for t in range(200):
            m.step(torch.tensor([t % 256]), cache)
    assert nbytes(cache) == before


def test_prefill_after_a_step_continues_and_round_trip(tmp_path):
    m = _model(True, (4, 4))
    x = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(3))
    cache = m.allocate_inference_cache(1)
    with torch.no_grad():
        m.step(x[:, 0], cache)  # a prefill on a cache in use continues from it (chunked prefill)
        torch.testing.assert_close(m(x[:, 1:], cache=cache), m(x)[:, 1:], **CLOSE["fp32_step_vs_parallel"])
    m.save_pretrained(tmp_path / "ck")
    m2 = SaShiMiLM.from_pretrained(tmp_path / "ck")
    assert m2.cfg == m.cfg
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
