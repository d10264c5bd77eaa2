"""Autoregressive generation with the O(1)-memory recurrent step (shared by the audio and DNA pipelines).

Works with any model exposing
    cache = model.allocate_inference_cache(batch_size)        # recurrent state, O(1) in length
    logits = model(ids, cache=cache)                          # (b, L) -> (b, L, V): parallel prefill, continues
                                                              #   from the cache and leaves it after the chunk
    logits = model.step(ids, cache)                           # (b,) -> (b, V): one token, updates cache
(`MambaLMHeadModel`, `mambaseq.sashimi.SaShiMiLM`, wrappers such as the pretrain pipeline's ACGT mask).
The prompt is consumed once in parallel, then every new token costs one `step`; memory does not grow with the
number of generated tokens besides the preallocated (batch, new tokens) output ids.

``generate(model, input_ids, max_new_tokens=..., cg=True)`` (also ``model.generate(...)`` through
``GenerationMixin``) takes mamba-ssm / Hugging Face argument names. With ``cg=True`` (CUDA only) the whole
decode step - embedding, every layer's conv/SSM update and gate, norm, head, sampling, log-likelihood
bookkeeping - is captured in one CUDA graph per (batch size, sampling settings) (one per position phase for
models whose step depends on the position modulo ``decode_phases``, e.g. SaShiMi's pooling), cached on the
model and replayed once per token: no host synchronisation per token (with ``eos_token_id`` the host checks
for all-finished once every ``EOS_CHECK_EVERY`` tokens). Sampling draws argmax(log p - log E), E ~ Exp(1)
(the exponential race: exactly a draw from p), so it needs no ``torch.multinomial`` and is graph-safe; the
graphs draw from a generator registered with them (philox offsets advance per replay) that takes the
caller's generator state before decoding and gives the advanced state back after.

Example:
    out = sample(model, n_new=16000, batch_size=8, start_token=128, temperature=1.0, top_p=0.95)
    out.tokens        # (8, 16000) int64 (new tokens only, unless return_prefix=True)
    out.loglik        # (8,) sum of log p_model(token) in nats over the new tokens (temperature 1, unfiltered)
    res = lm.generate(prompt, max_new_tokens=1024, top_k=1, cg=True, return_dict_in_generate=True)
    res.sequences     # (b, P + 1024) prompt then new tokens;  res.loglik (b,)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from mambaseq.kernels.l2_prefetch import warm_up as warm_up_l2_prefetch

EOS_CHECK_EVERY = 64  # tokens between host checks for "every sequence has emitted EOS"
MAX_CACHED_GRAPHS = 4  # decoders (graphs + static caches) kept per model, oldest dropped first


@dataclass
class SampleOutput:
    """tokens: (batch, n_new) or (batch, prefix + n_new); loglik: (batch,) nats under the model's own
    (temperature 1, unfiltered) distribution; sample_logprob: (batch,) nats under the distribution actually
    sampled from (after temperature/top-k/top-p); n_new: number of generated tokens."""

    tokens: Tensor
    loglik: Tensor
    sample_logprob: Tensor
    n_new: int

    @property
    def bits_per_token(self) -> Tensor:
        """(batch,) model NLL of each sample in bits per generated token."""
        return -self.loglik / (self.n_new * math.log(2))


@dataclass
class GenerateOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns.

    sequences: (batch, P + n) int64, the prompt then the n new tokens (after a sequence's EOS: EOS again);
    loglik: (batch,) float32 nats, sum of log p_model(token) (temperature 1, unfiltered) over each sequence's
        new tokens up to and including its EOS;
    sample_logprob: (batch,) float32 nats under the distribution sampled from (0 for greedy);
    lengths: (batch,) int64 new tokens per sequence (EOS included);
    scores: with ``output_scores``, a tuple of n float32 (batch, vocab) raw logits, one per new token; else None.
    """

    sequences: Tensor
    loglik: Tensor
    sample_logprob: Tensor
    lengths: Tensor
    scores: tuple[Tensor, ...] | None = None


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> Tensor:
    """Apply temperature, then top-k, then top-p (nucleus), then min-p to logits (..., V) -> float32 (..., V);
    removed entries become -inf. No host synchronisation (safe inside a CUDA graph).

    top_k=0, top_p=1.0 and min_p=0.0 disable the filters. top-k keeps exactly k tokens (ties at the k-th
    value are broken by index, as ``torch.topk``). top-p keeps the smallest set of most likely tokens whose
    probability reaches `top_p` (always at least the most likely one). min-p keeps tokens whose probability
    is at least min_p times the largest one. Raises ValueError on out-of-range settings.
    """
    _check_settings(temperature, top_k, top_p, min_p)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        idx = torch.topk(logits, top_k, dim=-1).indices
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, idx, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p > 0.0:
        logp = logits.log_softmax(-1)
        logits = logits.masked_fill(logp < logp.amax(-1, keepdim=True) + math.log(min_p), float("-inf"))
    return logits


def _check_settings(temperature: float, top_k: int, top_p: float, min_p: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use top_k=1 for greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not 0.0 <= min_p < 1.0:
        raise ValueError(f"min_p must be in [0, 1), got {min_p}")


@dataclass(frozen=True)
class _Settings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    eos_token_id: int | None = None
    ssm_state_dtype: torch.dtype | None = None  # the decoder's cache (not a sampling setting)

    @property
    def greedy(self) -> bool:
        return self.top_k == 1


def _pick(logits: Tensor, st: _Settings, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """logits (b, V) -> token (b,), log p_model(token) (b,), log p_sample(token) (b,); graph-safe."""
    logits = logits.float()
    if st.greedy:
        tok = logits.argmax(-1)
        sample_lp = torch.zeros_like(logits[:, 0])
    else:
        slogp = filter_logits(logits, st.temperature, st.top_k, st.top_p, st.min_p).log_softmax(-1)
        # exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) is a draw from p (filtered p_i = 0 never wins)
        e = torch.empty_like(slogp).exponential_(generator=generator).clamp_min_(1e-30)
        tok = (slogp - e.log()).argmax(-1)
        sample_lp = slogp.gather(-1, tok[:, None]).squeeze(-1)
    model_lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
    return tok, model_lp, sample_lp


def draw_tokens(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One sampling step, as ``generate`` takes it: logits (b, V) -> token (b,) int64, log p_model(token) (b,)
    and log p_sample(token) (b,), both float32 nats (model: temperature 1, unfiltered; sample: after the
    filters of ``filter_logits``). ``top_k=1`` is greedy (sample log-probability 0). Raises ValueError on
    out-of-range settings."""
    _check_settings(temperature, top_k, top_p, 0.0)
    return _pick(logits, _Settings(temperature, top_k, top_p), generator)


def _reset_cache(cache: Any) -> None:
    """Zero every tensor of a (nested list / dataclass) inference cache in place; integer positions -> 0."""
    if isinstance(cache, Tensor):
        cache.zero_()
    elif isinstance(cache, (list, tuple)):
        for c in cache:
            _reset_cache(c)
    elif dataclasses.is_dataclass(cache):
        for f in dataclasses.fields(cache):
            v = getattr(cache, f.name)
            if isinstance(v, int) and not isinstance(v, bool):
                setattr(cache, f.name, 0)
            else:
                _reset_cache(v)


class _Decoder:
    """Recurrent decoding state for one batch size and sampling settings: the inference cache, the current
    token ids and the per-sequence accumulators, all static tensors, and the step that advances them.

    Eager: ``advance`` runs the step. Graph (``capture``): one CUDA graph per position phase replays it."""

    def __init__(self, model: torch.nn.Module, batch: int, st: _Settings, generator: torch.Generator | None,
                 device: torch.device, keep_scores: bool) -> None:
        self.model, self.st, self.generator, self.keep_scores = model, st, generator, keep_scores
        self.cache = (model.allocate_inference_cache(batch) if st.ssm_state_dtype is None
                      else model.allocate_inference_cache(batch, ssm_state_dtype=st.ssm_state_dtype))
        self.ids = torch.zeros(batch, dtype=torch.long, device=device)
        self.loglik = torch.zeros(batch, device=device)
        self.slogp = torch.zeros(batch, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.phases = int(getattr(model, "decode_phases", 1))
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.logits: list[Tensor] = []  # per phase: the graph's static logits output
        self.last_logits: Tensor | None = None

    def reset(self) -> None:
        _reset_cache(self.cache)
        for t in (self.ids, self.loglik, self.slogp, self.lengths, self.finished):
            t.zero_()

    def consume(self, logits: Tensor) -> None:
        """Pick the next tokens from logits (b, V) into ``ids``; update the accumulators (device-side only)."""
        tok, lp, sp = _pick(logits, self.st, self.generator)
        if self.st.eos_token_id is None:
            self.loglik += lp
            self.slogp += sp
        else:
            live = ~self.finished
            tok = torch.where(live, tok, self.st.eos_token_id)
            self.loglik += torch.where(live, lp, 0.0)
            self.slogp += torch.where(live, sp, 0.0)
            self.lengths += live
            self.finished |= tok == self.st.eos_token_id
        self.ids.copy_(tok)

    def _body(self) -> Tensor:
        logits = self.model.step(self.ids, self.cache)
        self.consume(logits)
        return logits

    def set_position(self, consumed: int) -> None:
        setter = getattr(self.model, "set_decode_position", None)
        if setter is not None:
            setter(self.cache, consumed)

    def advance(self, consumed: int) -> None:
        """Feed ``ids`` (the token at position ``consumed``) and pick the next tokens."""
        if self.graphs:
            k = consumed % self.phases
            self.graphs[k].replay()
            self.set_position(consumed + 1)
            self.last_logits = self.logits[k]
        else:
            self.last_logits = self._body()

    def capture(self) -> None:
        """Warm up (compiles the kernels) and capture one CUDA graph per phase. Sampling graphs draw from the
        decoder's own generator, registered with every graph; ``generate`` loads the caller's RNG state into
        it before decoding and hands the advanced state back after, so one graph serves any generator."""
        if not self.st.greedy:
            self.generator = torch.Generator(device=self.ids.device)
        warm_up_l2_prefetch(self.ids.device)  # compiled before the capture (kernels/l2_prefetch.py)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                for k in range(self.phases):
                    self.set_position(k)
                    self._body()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        pool = torch.cuda.graph_pool_handle()
        for k in range(self.phases):
            self.set_position(k)
            g = torch.cuda.CUDAGraph()
            if self.generator is not None:
                g.register_generator_state(self.generator)
            with torch.cuda.graph(g, pool=pool):
                self.logits.append(self._body())  # kept alive: no other phase's graph reuses its memory
            self.graphs.append(g)
        torch.cuda.synchronize()
        self.reset()


def _param_key(model: torch.nn.Module) -> tuple:
    ps = list(model.parameters())
    return (ps[0].device, ps[0].dtype, hash(tuple(p.data_ptr() for p in ps)))


def _graph_decoder(model: torch.nn.Module, batch: int, st: _Settings, keep_scores: bool) -> _Decoder:
    """The captured decoder for (batch, settings, weights) cached on the model, captured on first use."""
    store: dict = model.__dict__.setdefault("_generation_graphs", {})
    key = (batch, st, keep_scores, _param_key(model))
    dec = store.pop(key, None)
    if dec is None:
        while len(store) >= MAX_CACHED_GRAPHS:
            store.pop(next(iter(store)))
        dec = _Decoder(model, batch, st, None, next(model.parameters()).device, keep_scores)
        dec.capture()
    store[key] = dec  # most recently used last
    return dec


@torch.no_grad()  # not inference_mode: returned tensors stay usable in autograd code
def generate(
    model: torch.nn.Module,
    input_ids: Tensor,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    top_k: int = 1,
    top_p: float = 1.0,
    min_p: float = 0.0,
    eos_token_id: int | None = None,
    do_sample: bool | None = None,
    cg: bool = False,
    return_dict_in_generate: bool = False,
    output_scores: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
    ssm_state_dtype: torch.dtype | None = None,
) -> Tensor | GenerateOutput:
    """Continue the prompts ``input_ids`` (batch, P) token by token.

    Args:
        input_ids: (batch, P >= 1) integer prompt, consumed in one parallel forward (prefill).
        max_length: total length P + new tokens (mamba-ssm / Hugging Face); or give ``max_new_tokens``.
        temperature, top_k, top_p, min_p: sampling filters (see ``filter_logits``); ``top_k=1`` (the default,
            as mamba-ssm's ``generate``) is greedy: argmax, no randomness; ``top_k=0`` samples from the whole
            distribution. ``top_p=0.0`` means "off", as in mamba-ssm.
        do_sample: Hugging Face's switch: False is greedy whatever ``top_k``; True samples, with ``top_k=1``
            (the greedy default) read as 0 (no top-k filter); None leaves ``top_k`` to decide.
        eos_token_id: a sequence that emits it is finished: it emits it again and stops accumulating; the
            output is cut after the step where every sequence has finished (checked every EOS_CHECK_EVERY).
        cg: capture the decode step in CUDA graphs (cached on the model per batch size and settings; the
            first call pays the capture). CUDA models only.
        return_dict_in_generate: return a ``GenerateOutput`` (sequences, loglik, sample_logprob, lengths,
            scores) instead of the sequences tensor.
        output_scores: keep every step's logits (memory grows with the length; off by default).
        generator: the RNG to sample with (None: the device's default generator); reproducible from a seed.
        progress: show a progress bar.
        ssm_state_dtype: the recurrent SSM state's dtype; None keeps it in float32 (complex64), the most
            accurate; ``torch.bfloat16`` or ``torch.float16`` halve the state read and written each GPU step, as
            mamba-ssm's cache of a bf16 model (real SSMs only; see ``Mamba.allocate_cache``). The step's math is
            fp32 either way.
    Returns:
        sequences (batch, P + n) int64, or ``GenerateOutput``.
    Raises:
        ValueError: bad lengths, settings or prompt, ``ssm_state_dtype`` not a state dtype of this model, or
            ``cg=True`` on a CPU model.
    """
    if max_length is not None and max_new_tokens is not None:
        raise ValueError("give max_length (total length) or max_new_tokens, not both")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 1 \
            or input_ids.is_floating_point() or input_ids.is_complex():
        raise ValueError(f"input_ids must be (batch, P>=1) integer tokens, got "
                         f"{getattr(input_ids, 'dtype', type(input_ids))} {tuple(getattr(input_ids, 'shape', ()))}")
    b, P = input_ids.shape
    if max_new_tokens is None:
        if max_length is None:
            raise ValueError("generate needs max_length or max_new_tokens")
        max_new_tokens = max_length - P
    n_new = int(max_new_tokens)
    if n_new < 1:
        raise ValueError(f"nothing to generate: {n_new} new tokens (prompt length {P}, max_length {max_length})")
    if do_sample is not None:
        top_k = 1 if not do_sample else (0 if int(top_k) == 1 else top_k)
    st = _Settings(float(temperature), int(top_k), 1.0 if top_p == 0.0 else float(top_p), float(min_p),
                   None if eos_token_id is None else int(eos_token_id), ssm_state_dtype)
    _check_settings(st.temperature, st.top_k, st.top_p, st.min_p)
    if ssm_state_dtype is not None and not isinstance(ssm_state_dtype, torch.dtype):
        raise ValueError(f"ssm_state_dtype must be None or a torch.dtype (e.g. torch.bfloat16), "
                         f"got {ssm_state_dtype!r}")
    device = next(model.parameters()).device
    if cg and device.type != "cuda":
        raise ValueError(f"cg=True needs a CUDA model (CUDA graphs); this one is on {device}: use cg=False")
    if cg and generator is None and not st.greedy:
        generator = torch.cuda.default_generators[device.index or 0]
    input_ids = input_ids.to(device=device, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        if cg:
            dec = _graph_decoder(model, b, st, output_scores)
            if dec.generator is not None:  # continue the caller's random stream in the graphs' generator
                dec.generator.set_state(generator.get_state())
        else:
            dec = _Decoder(model, b, st, generator, device, output_scores)
        dec.reset()
        out = torch.empty(b, n_new, dtype=torch.long, device=device)
        logits = model(input_ids, cache=dec.cache)[:, -1]  # parallel prefill into the (static) cache
        dec.consume(logits)
        out[:, 0] = dec.ids
        scores = [logits.float().clone()] if output_scores else None
        done = n_new
        for t in tqdm(range(1, n_new), desc="generating", disable=not progress, mininterval=2.0):
            dec.advance(P + t - 1)
            out[:, t] = dec.ids
            if scores is not None:
                scores.append(dec.last_logits.float().clone())
            if st.eos_token_id is not None and t % EOS_CHECK_EVERY == 0 and bool(dec.finished.all()):
                done = t + 1
                break
        if cg and dec.generator is not None:
            generator.set_state(dec.generator.get_state())  # the caller's generator advanced as if it drew
    finally:
        model.train(was_training)
    seqs = torch.cat([input_ids, out[:, :done]], 1)
    if not return_dict_in_generate:
        return seqs
    lengths = dec.lengths.clone() if st.eos_token_id is not None else torch.full_like(dec.lengths, done)
    return GenerateOutput(sequences=seqs, loglik=dec.loglik.clone(), sample_logprob=dec.slogp.clone(),
                          lengths=lengths, scores=tuple(scores) if scores is not None else None)


class GenerationMixin:
    """``model.generate(...)``: see ``mambaseq.generation.generate`` (same arguments, without ``model``)."""

    def generate(self, input_ids: Tensor, max_length: int | None = None, **kwargs: Any) -> Tensor | GenerateOutput:
        return generate(self, input_ids, max_length, **kwargs)


SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p", "generator")  # what ``sample`` passes to ``generate``


@torch.no_grad()  # not inference_mode: returned tensors stay usable in autograd code
def sample(model: torch.nn.Module, n_new: int, prefix: Tensor | None = None, batch_size: int | None = None,
           start_token: int | None = None, *, return_prefix: bool = False, progress: bool = True,
           cg: bool | None = None, **sampling: Any) -> SampleOutput:
    """Generate `n_new` tokens per sequence (``generate`` with a pipeline-friendly interface).

    prefix: (batch, P) int tokens to condition on (consumed once in parallel). If None, generation is
        unconditional: `batch_size` sequences start from `start_token` (e.g. the silence class for audio,
        a BOS token for text), which is fed to the model but not returned.
    cg: CUDA graphs (None: on when the model is on a CUDA device).
    sampling: ``generate``'s sampling options ``temperature``, ``top_k``, ``top_p``, ``min_p`` and
        ``generator``; unlike ``generate`` it samples by default (``top_k=0``: the whole distribution);
        TypeError for any other keyword.
    The first new token is drawn from the logits after the last prefix position. Returns `SampleOutput`.
    Raises ValueError for a bad length, prefix or setting.
    """
    unknown = set(sampling) - set(SAMPLING_OPTIONS)
    if unknown:
        raise TypeError(f"sample() got unexpected keyword argument(s) {sorted(unknown)}; sampling options are "
                        f"{SAMPLING_OPTIONS}")
    if n_new < 1:
        raise ValueError(f"n_new must be >= 1, got {n_new}")
    device = next(model.parameters()).device
    if prefix is None:
        if batch_size is None or start_token is None:
            raise ValueError("unconditional sampling needs batch_size and start_token (prefix is None)")
        prefix = torch.full((batch_size, 1), start_token, dtype=torch.long, device=device)
        keep_prefix = False
    else:
        if prefix.dim() != 2 or prefix.shape[1] < 1 or prefix.is_floating_point():
            raise ValueError(f"prefix must be (batch, P>=1) integer tokens, got {prefix.dtype} {tuple(prefix.shape)}")
        if batch_size is not None and batch_size != prefix.shape[0]:
            raise ValueError(f"batch_size={batch_size} disagrees with prefix batch {prefix.shape[0]}")
        keep_prefix = return_prefix
    sampling.setdefault("top_k", 0)  # a sampler: generate's default (top_k=1) is greedy
    res = generate(model, prefix, max_new_tokens=n_new, cg=device.type == "cuda" if cg is None else cg,
                   return_dict_in_generate=True, progress=progress, **sampling)
    tokens = res.sequences if keep_prefix else res.sequences[:, prefix.shape[1]:]
    return SampleOutput(tokens=tokens, loglik=res.loglik.cpu(), sample_logprob=res.sample_logprob.cpu(), n_new=n_new)


@torch.no_grad()  # not inference_mode: returned tensors stay usable in autograd code
def sequence_loglik(model: torch.nn.Module, tokens: Tensor, start_token: int | None = None) -> Tensor:
    """Log-likelihood (nats) of each row of `tokens` (b, L) under `model` with one parallel forward.

    With `start_token`, every token is scored (the model is fed [start, tokens[:-1]]); without it the first
    token is context only. Returns (b,). Matches `SampleOutput.loglik` for temperature-1 samples.
    """
    tokens = tokens.long()
    if start_token is not None:
        inp = torch.cat([torch.full_like(tokens[:, :1], start_token), tokens[:, :-1]], 1)
        tgt = tokens
    else:
        inp, tgt = tokens[:, :-1], tokens[:, 1:]
    logp = model(inp).float().log_softmax(-1)
    return logp.gather(-1, tgt[..., None]).squeeze(-1).sum(-1)
