"""Autoregressive sampling with the O(1)-memory recurrent step (shared by the audio and DNA pipelines).

Works with any model exposing
    cache = model.allocate_inference_cache(batch_size)        # recurrent state, O(1) in length
    logits = model(ids, cache=cache)                          # (b, L) -> (b, L, V): parallel prefill, fills cache
    logits = model.step(ids, cache)                           # (b,) -> (b, V): one token, updates cache
(`MambaLMHeadModel`, `mambaseq.sashimi.SaShiMiLM`). The prefix is consumed once in parallel, then every new
token costs one `step`; memory does not grow with the number of generated tokens (besides the output ids).

Example:
    out = sample(model, n_new=16000, batch_size=8, start_token=128, temperature=1.0, top_p=0.95)
    out.tokens        # (8, 16000) int64 (new tokens only, unless return_prefix=True)
    out.loglik        # (8,) sum of log p_model(token) in nats over the new tokens (temperature 1, unfiltered)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm


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


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Apply temperature, then top-k, then top-p (nucleus) to logits (..., V); removed entries become -inf.

    top_k=0 and top_p=1.0 disable the filters. top-p keeps the smallest set of most likely tokens whose
    probability reaches `top_p` (always at least the most likely one).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use top_k=1 for greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _draw(logits: Tensor, temperature: float, top_k: int, top_p: float,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """logits (b, V) -> token (b,), log p_model(token) (b,), log p_sample(token) (b,)."""
    filtered = filter_logits(logits, temperature, top_k, top_p)
    sample_logp = filtered.log_softmax(-1)
    tok = torch.multinomial(sample_logp.exp(), 1, generator=generator).squeeze(-1)
    model_logp = logits.float().log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
    return tok, model_logp, sample_logp.gather(-1, tok[:, None]).squeeze(-1)


@torch.no_grad()  # not inference_mode: returned tensors stay usable in autograd code
def sample(
    model: torch.nn.Module,
    n_new: int,
    prefix: Tensor | None = None,
    batch_size: int | None = None,
    start_token: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    return_prefix: bool = False,
    progress: bool = True,
) -> SampleOutput:
    """Generate `n_new` tokens per sequence.

    prefix: (batch, P) int tokens to condition on (consumed once in parallel). If None, generation is
        unconditional: `batch_size` sequences start from `start_token` (e.g. the silence class for audio,
        a BOS token for text), which is fed to the model but not returned.
    The first new token is drawn from the logits after the last prefix position. Returns `SampleOutput`.
    """
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
        prefix = prefix.to(device=device, dtype=torch.long)
        keep_prefix = return_prefix
    b = prefix.shape[0]
    was_training = model.training
    model.eval()
    try:
        cache = model.allocate_inference_cache(b)
        logits = model(prefix, cache=cache)[:, -1]  # (b, V): parallel prefill
        out = torch.empty(b, n_new, dtype=torch.long, device=device)
        loglik = torch.zeros(b, device=device)
        slogp = torch.zeros(b, device=device)
        for t in tqdm(range(n_new), desc="sampling", disable=not progress, mininterval=2.0):
            tok, lp, sp = _draw(logits, temperature, top_k, top_p, generator)
            out[:, t] = tok
            loglik += lp
            slogp += sp
            if t + 1 < n_new:
                logits = model.step(tok, cache)
    finally:
        model.train(was_training)
    tokens = torch.cat([prefix, out], 1) if keep_prefix else out
    return SampleOutput(tokens=tokens, loglik=loglik.cpu(), sample_logprob=slogp.cpu(), n_new=n_new)


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
