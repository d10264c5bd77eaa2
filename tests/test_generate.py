"""generate(): greedy == teacher-forced argmax (real, complex, SaShiMi; eager on CPU, CUDA graphs on a GPU),
chunked prefill == one-shot prefill, exact top-k on ties, seeded sampling, EOS, lengths and errors.

Seeds derive from the test id. The `gpu` tests (graph == eager == teacher-forced argmax on CUDA, graph reuse,
seeded graph sampling, memory flat in the generated length) are skipped without a CUDA device.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from mambaseq.config import MambaConfig
from mambaseq.generation import GenerateOutput, filter_logits, generate, sample
from mambaseq.model import MambaLMHeadModel
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM
from tolerances import CLOSE, LOGIT_GAP

KINDS = ["real", "complex", "sashimi"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # hundreds of tiny step ops


def _seed(request) -> int:
    return zlib.crc32(request.node.nodeid.encode())


def _model(kind: str, seed: int, vocab: int = 64, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "sashimi":
        m = SaShiMiLM(SaShiMiConfig(d_model=8, n_layer=1, d_state=4, pool=(2, 2), vocab_size=vocab, **kw))
        head = m.lm_head
    else:
        m = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=vocab, complex=kind == "complex", **kw))
        head = m.lm_head
    with torch.no_grad():
        head.weight.mul_(8)  # spread the logits: random tiny models otherwise predict near-ties everywhere
    return m.eval()


def _prompt(seed: int, b: int, P: int, vocab: int = 64, device: str = "cpu") -> torch.Tensor:
    return torch.randint(0, vocab, (b, P), generator=torch.Generator().manual_seed(seed)).to(device)


def assert_teacher_forced(model, seqs: torch.Tensor, P: int, tol: float) -> torch.Tensor:
    """Every new token is the argmax of the parallel forward's logits at its position (up to ``tol`` of
    float noise between the recurrent and the parallel path). Returns the parallel log-likelihood."""
    with torch.no_grad():
        logits = model(seqs[:, :-1]).float()[:, P - 1:]  # predictions for positions P .. end
    new = seqs[:, P:]
    chosen = logits.gather(-1, new[..., None]).squeeze(-1)
    gap = logits.max(-1).values - chosen
    assert float(gap.max()) <= tol, (f"generated token is not the argmax at {int((gap > tol).sum())} positions "
                                     f"(worst logit gap {float(gap.max()):.3g})")
    return logits.log_softmax(-1).gather(-1, new[..., None]).squeeze(-1).sum(-1)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_equals_teacher_forced_argmax(kind, request):
    seed = _seed(request)
    m = _model(kind, seed)
    P, n = 7, 33  # SaShiMi: the prompt ends mid-group (pool 2 x 2)
    res = m.generate(_prompt(seed, 3, P), max_new_tokens=n, top_k=1, return_dict_in_generate=True)
    assert isinstance(res, GenerateOutput) and res.sequences.shape == (3, P + n) and res.scores is None
    assert torch.equal(res.lengths, torch.full((3,), n))
    ll = assert_teacher_forced(m, res.sequences, P, tol=LOGIT_GAP["fp32_cpu"])
    torch.testing.assert_close(res.loglik, ll, **CLOSE["fp32_logits"])
    assert torch.equal(res.sample_logprob, torch.zeros(3))
    # max_length is the total length, and the default return is the sequences tensor
    again = m.generate(res.sequences[:, :P], max_length=P + n, top_k=1)
    assert torch.equal(again, res.sequences)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [(1, 9), (5, 5), (3, 4, 3), (9, 1)], ids=lambda s: "x".join(map(str, s)))
def test_chunked_prefill_equals_one_shot(kind, split, request):
    seed = _seed(request)
    m = _model(kind, seed)
    ids = _prompt(seed, 2, sum(split))
    with torch.no_grad():
        full = m(ids)
        cache = m.allocate_inference_cache(2)
        parts, t = [], 0
        for n in split:
            parts.append(m(ids[:, t:t + n], cache=cache))
            t += n
        torch.testing.assert_close(torch.cat(parts, 1), full, **CLOSE["fp32_step_vs_parallel"])
        # and the cache then continues like a one-shot prefill's
        ref = m.allocate_inference_cache(2)
        m(ids, cache=ref)
        nxt = ids[:, -1]
        torch.testing.assert_close(m.step(nxt, cache), m.step(nxt, ref), **CLOSE["fp32_step_vs_parallel"])


def test_prefill_cache_batch_mismatch_names_both_sizes():
    m = _model("real", 1)
    with pytest.raises(ValueError, match=r"batch size 3.*batch size 2"):
        with torch.no_grad():
            m(torch.zeros(2, 5, dtype=torch.long), cache=m.allocate_inference_cache(3))


@pytest.mark.parametrize("logits,k", [([2.0, 2.0, 1.0], 1), ([3.0, 1.0, 1.0, 1.0], 2), ([0.0] * 8, 3)],
                         ids=["top1-tie", "top2-tie", "all-tied"])
def test_top_k_keeps_exactly_k_on_ties(logits, k):
    out = filter_logits(torch.tensor([logits, logits]), top_k=k)
    assert (torch.isfinite(out).sum(-1) == k).all()


def test_min_p_keeps_tokens_within_factor_of_the_best():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, min_p=0.2))  # keep p >= 0.1
    assert kept.tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("kind", ["complex", "sashimi"])
def test_sampling_is_reproducible_from_a_seed(kind, request):
    seed = _seed(request)
    m = _model(kind, seed)
    prompt = _prompt(seed, 4, 5)

    def run(s):
        return m.generate(prompt, max_new_tokens=25, temperature=1.3, top_p=0.9, top_k=20,
                          generator=torch.Generator().manual_seed(s), return_dict_in_generate=True)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.loglik, b.loglik)
    assert not torch.equal(a.sequences, c.sequences)
    # the recorded log-likelihood is the parallel forward's
    with torch.no_grad():
        logp = m(a.sequences[:, :-1]).float().log_softmax(-1)[:, 4:]
    torch.testing.assert_close(a.loglik, logp.gather(-1, a.sequences[:, 5:, None]).squeeze(-1).sum(-1),
                               **CLOSE["fp32_loglik"])


def test_eos_finishes_sequences_and_stops_early(request):
    seed = _seed(request)
    m = _model("real", seed, vocab=4)
    prompt = _prompt(seed, 3, 4, vocab=4)
    free = m.generate(prompt, max_new_tokens=200, top_k=1, return_dict_in_generate=True)
    eos = int(free.sequences[0, 4 + 2])  # the first sequence emits it at its third new token
    res = m.generate(prompt, max_new_tokens=200, top_k=1, eos_token_id=eos, return_dict_in_generate=True)
    new, ref = res.sequences[:, 4:], free.sequences[:, 4:]
    for i in range(3):
        hit = (ref[i] == eos).nonzero().flatten()
        end = int(hit[0]) + 1 if len(hit) else ref.shape[1]
        assert int(res.lengths[i]) == min(end, new.shape[1])
        assert torch.equal(new[i, :end], ref[i, :end]) and (new[i, end:] == eos).all()
    if bool((res.lengths < 200).all()):  # every sequence finished: cut at the next check after the last EOS
        assert new.shape[1] <= 64 * math.ceil(int(res.lengths.max()) / 64) + 1


def test_output_scores_are_the_step_logits(request):
    seed = _seed(request)
    m = _model("sashimi", seed)
    res = m.generate(_prompt(seed, 2, 3), max_new_tokens=6, top_k=1, output_scores=True,
                     return_dict_in_generate=True)
    assert len(res.scores) == 6 and res.scores[0].shape == (2, 64)
    with torch.no_grad():
        par = m(res.sequences[:, :-1]).float()[:, 2:]
    torch.testing.assert_close(torch.stack(res.scores, 1), par, **CLOSE["fp32_logits"])


def test_defaults_are_greedy_as_mamba_ssm_and_do_sample_switches(request):
    """generate() without sampling options is greedy (mamba-ssm's top_k=1 default), do_sample=False forces
    greedy, do_sample=True samples (top_k=1 read as no filter); sample() samples by default."""
    seed = _seed(request)
    m = _model("real", seed)
    prompt = _prompt(seed, 2, 5)
    greedy = m.generate(prompt, max_new_tokens=12, top_k=1)
    assert torch.equal(m.generate(prompt, max_new_tokens=12), greedy)
    assert torch.equal(m.generate(prompt, max_new_tokens=12, top_k=0, do_sample=False), greedy)
    draws = [m.generate(prompt, max_new_tokens=12, do_sample=True, generator=torch.Generator().manual_seed(s))
             for s in range(4)]
    assert any(not torch.equal(d, greedy) for d in draws)
    outs = [sample(m, 12, prefix=prompt, progress=False, generator=torch.Generator().manual_seed(s)).tokens
            for s in range(4)]
    assert any(not torch.equal(o, greedy[:, 5:]) for o in outs)


def test_sample_wraps_generate():
    m = _model("real", 5, vocab=256)
    out = sample(m, 9, batch_size=2, start_token=128, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.tokens.shape == (2, 9) and out.loglik.shape == (2,)
    prefix = _prompt(5, 2, 4, vocab=256)
    out = sample(m, 5, prefix=prefix, top_k=1, return_prefix=True, progress=False)
    assert torch.equal(out.tokens, m.generate(prefix, max_new_tokens=5, top_k=1))


def test_generate_argument_errors():
    m = _model("real", 2)
    ids = torch.zeros(1, 3, dtype=torch.long)
    for kw, msg in [(dict(), "max_length or max_new_tokens"), (dict(max_length=3), "nothing to generate"),
                    (dict(max_length=9, max_new_tokens=2), "not both"), (dict(max_new_tokens=2, cg=True), "CUDA"),
                    (dict(max_new_tokens=2, temperature=0.0), "temperature"),
                    (dict(max_new_tokens=2, min_p=1.0), "min_p")]:
        with pytest.raises(ValueError, match=msg):
            m.generate(ids, **kw)
    with pytest.raises(ValueError, match="input_ids"):
        m.generate(torch.zeros(1, 3), max_new_tokens=2)
    # mamba-ssm's "off" value for top_p is accepted
    assert m.generate(ids, max_new_tokens=2, top_k=1, top_p=0.0).shape == (1, 5)


# ----------------------------------------------------------------------------------------------- GPU
def _same_or_near_tie(model, a: torch.Tensor, b: torch.Tensor, P: int, tol: float) -> None:
    """Two greedy runs agree, or first differ where the parallel logits of the two choices are within tol."""
    if torch.equal(a, b):
        return
    row, col = [int(i) for i in (a != b).nonzero()[0]]
    with torch.no_grad():
        logits = model(a[row:row + 1, :col]).float()[0, -1]
    gap = float((logits[a[row, col]] - logits[b[row, col]]).abs())
    assert gap <= tol, f"graph and eager decoding differ at sequence {row}, position {col} (logit gap {gap:.3g})"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 5])
def test_gpu_graph_equals_eager_equals_teacher_forced(kind, dtype, batch, request):
    seed = _seed(request)
    m = _model(kind, seed).cuda().to(torch.float32 if dtype == "fp32" else torch.bfloat16)
    P, n = 9, 70
    prompt = _prompt(seed, batch, P, device="cuda")
    eager = m.generate(prompt, max_new_tokens=n, top_k=1, return_dict_in_generate=True)
    graph = m.generate(prompt, max_new_tokens=n, top_k=1, cg=True, return_dict_in_generate=True)
    again = m.generate(prompt, max_new_tokens=n, top_k=1, cg=True, return_dict_in_generate=True)
    assert len(m.__dict__["_generation_graphs"]) == 1  # captured once, reused
    assert torch.equal(graph.sequences, again.sequences) and torch.equal(graph.loglik, again.loglik)
    tol = LOGIT_GAP[dtype]
    _same_or_near_tie(m, eager.sequences, graph.sequences, P, tol)
    assert_teacher_forced(m, graph.sequences, P, tol)
    assert_teacher_forced(m, eager.sequences, P, tol)
    if dtype == "fp32":
        torch.testing.assert_close(graph.loglik, eager.loglik, **CLOSE["fp32_loglik"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["real", "sashimi"])
def test_gpu_graph_sampling_reproducible_and_flat_memory(kind, request):
    seed = _seed(request)
    m = _model(kind, seed).cuda()
    prompt = _prompt(seed, 4, 6, device="cuda")

    def run(s, n=200, **kw):
        return m.generate(prompt, max_new_tokens=n, temperature=0.9, top_k=0, top_p=0.95, cg=True,
                          generator=torch.Generator(device="cuda").manual_seed(s), return_dict_in_generate=True, **kw)

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a.sequences, b.sequences) and not torch.equal(a.sequences, c.sequences)
    with torch.no_grad():
        logp = m(a.sequences[:, :-1]).float().log_softmax(-1)[:, 5:]
    torch.testing.assert_close(a.loglik, logp.gather(-1, a.sequences[:, 6:, None]).squeeze(-1).sum(-1),
                               **CLOSE["bf16_loglik"])
    # default seed path (the device's default generator, auto-registered with the graph)
    torch.manual_seed(7)
    d1 = m.generate(prompt, max_new_tokens=50, do_sample=True, cg=True)
    torch.manual_seed(7)
    assert torch.equal(d1, m.generate(prompt, max_new_tokens=50, do_sample=True, cg=True))
    # memory: 16x the tokens costs only the output ids
    run(5, 256)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run(5, 256)
    short = torch.cuda.max_memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    run(5, 4096)
    long = torch.cuda.max_memory_allocated() - base
    assert long - short <= 4 * (4096 - 256) * 8 * 2 + (1 << 20), (short, long)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_graph_eos_and_scores_match_eager(request):
    seed = _seed(request)
    m = _model("complex", seed, vocab=4).cuda()
    prompt = _prompt(seed, 3, 4, vocab=4, device="cuda")
    free = m.generate(prompt, max_new_tokens=150, top_k=1)
    eos = int(free[0, 4 + 2])
    kw = dict(max_new_tokens=150, top_k=1, eos_token_id=eos, output_scores=True, return_dict_in_generate=True)
    eager, graph = m.generate(prompt, **kw), m.generate(prompt, cg=True, **kw)
    assert torch.equal(eager.sequences, graph.sequences) and torch.equal(eager.lengths, graph.lengths)
    torch.testing.assert_close(torch.stack(graph.scores), torch.stack(eager.scores), **CLOSE["fp32_logits"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("batch", [1, 5])
def test_gpu_l2_prefetch_changes_no_value(batch, request, monkeypatch):
    """The L2 prefetch branch of the decode graph (kernels/l2_prefetch.py, sm_90+) is a cache hint: decoding
    with it gives bit-identical tokens and scores to decoding without it."""
    from mambaseq.kernels.l2_prefetch import l2_prefetch_supported

    seed = _seed(request)
    if not l2_prefetch_supported(torch.device("cuda")):
        pytest.skip("L2 prefetch needs compute capability >= 9.0")
    m = _model("real", seed).cuda().to(torch.bfloat16)
    prompt = _prompt(seed, batch, 7, device="cuda")
    kw = dict(max_new_tokens=40, top_k=1, cg=True, return_dict_in_generate=True, output_scores=True)
    monkeypatch.setenv("MAMBASEQ_L2_PREFETCH", "1")
    with_pf = m.generate(prompt, **kw)
    from mambaseq.kernels.l2_prefetch import l2_prefetch_ready

    assert l2_prefetch_ready(torch.device("cuda")), "the prefetch kernel did not compile and run"
    m.__dict__.pop("_generation_graphs")
    monkeypatch.setenv("MAMBASEQ_L2_PREFETCH", "0")
    without = m.generate(prompt, **kw)
    assert torch.equal(with_pf.sequences, without.sequences)
    assert all(torch.equal(a, b) for a, b in zip(with_pf.scores, without.scores))


def test_step_prefetch_tensors_follow_the_step(request):
    """What the decode step prefetches while layer i starts: layer i's states and its weights after in_proj,
    in order of use, then the next layer's norm and in_proj (after the last layer: the final norm and layer
    0's in_proj, for the next token); ranges are whole tensors in 16-byte multiples, at most 8."""
    from mambaseq.kernels.l2_prefetch import MAX_TENSORS, prefetch_ranges

    m = _model("real", _seed(request))
    bb = m.backbone
    cache = bb.allocate_inference_cache(3)
    last = len(bb.layers) - 1
    for i in (0, last):
        got = bb.step_prefetch_tensors(i, cache)
        mx, nxt = bb.layers[i].mixer, bb.layers[(i + 1) % len(bb.layers)]
        want = [cache[i].conv_state, mx.x_proj.weight, mx.dt_proj.weight, mx.A_log, cache[i].ssm_state,
                mx.out_proj.weight, (bb.norm_f if i == last else nxt.norm).weight, nxt.mixer.in_proj.weight]
        assert len(got) == len(want) and all(a is b for a, b in zip(got, want)), f"layer {i}"
        ranges = prefetch_ranges(got)
        assert len(ranges) <= MAX_TENSORS
        for (view, n), t in zip(ranges, got):
            assert view.data_ptr() == t.data_ptr() and n == t.numel() * t.element_size() // 16 * 16
    odd = torch.zeros(5, dtype=torch.uint8)  # 5 bytes: nothing to prefetch in 16-byte units
    assert prefetch_ranges([None, odd, torch.zeros(4, 8)[:, ::2]]) == []  # None, too short, non-contiguous
    assert len(prefetch_ranges([torch.zeros(64)] * 10)) == MAX_TENSORS


def test_half_precision_ssm_state_decodes_close_to_fp32(request):
    """``generate(ssm_state_dtype=torch.bfloat16)`` keeps the recurrent state in bf16 (as mamba-ssm's cache of
    a bf16 model): the cache holds bf16 states, the step's math stays fp32, and the log-likelihood of the
    fp32-state decode's own tokens moves by rounding only; a dtype the kernels cannot keep a state in is
    refused naming the argument."""
    seed = _seed(request)
    m = _model("real", seed)
    prompt = _prompt(seed, 2, 5)
    ref = m.generate(prompt, max_new_tokens=24, return_dict_in_generate=True)
    half = m.generate(prompt, max_new_tokens=24, return_dict_in_generate=True, ssm_state_dtype=torch.bfloat16)
    cache = m.allocate_inference_cache(2, ssm_state_dtype=torch.bfloat16)
    assert all(c.ssm_state.dtype == torch.bfloat16 and c.conv_state.dtype == torch.float32 for c in cache)
    agree = float((ref.sequences == half.sequences).float().mean())
    assert agree >= 0.9, f"bf16-state greedy decode agrees with the fp32-state one on only {agree:.2f} of tokens"
    # teacher-forced through the step with a bf16 state: the same tokens score within rounding
    assert_teacher_forced(m, half.sequences, 5, LOGIT_GAP["bf16"])
    with pytest.raises(ValueError, match="ssm_state_dtype must be None or one of torch.float32"):
        m.allocate_inference_cache(2, ssm_state_dtype=torch.int8)
    with pytest.raises(ValueError, match="ssm_state_dtype must be None or a torch.dtype"):
        m.generate(prompt, max_new_tokens=2, ssm_state_dtype="bf16")
    for kind in ("complex", "sashimi"):  # complex SSMs keep a complex64 state
        with pytest.raises(ValueError, match="ssm_state_dtype must be None or one of torch.complex64"):
            _model(kind, seed).generate(prompt, max_new_tokens=2, ssm_state_dtype=torch.bfloat16)
    real_sashimi = _model("sashimi", seed, complex=False)
    cache = real_sashimi.allocate_inference_cache(2, ssm_state_dtype=torch.bfloat16)
    assert cache.down[0].ssm_state.dtype == torch.bfloat16
    assert real_sashimi.generate(prompt, max_new_tokens=4, ssm_state_dtype=torch.bfloat16).shape == (2, 9)
