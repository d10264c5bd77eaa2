"""Every numerical tolerance of the test suite, in one table, each with the reason for its size.

A test compares with ``**CLOSE[name]`` (keywords of ``torch.testing.assert_close`` / ``np.testing.assert_allclose``),
``REL_RMS[dtype]`` (relative RMS error, ``kernel_utils.check_errors``) or one of the named bounds below. A change
of numerics that needs a looser entry shows up here, in one diff, instead of in a test body.
"""

from __future__ import annotations

import torch

# Relative RMS error of a kernel against its reference, by the dtype of the kernel's inputs/outputs. State and
# accumulation are fp32 in every case; the bf16/fp16 bounds cover the rounding of inputs, outputs and gradients
# (bf16 keeps 8 significant bits: one rounding is ~2-4e-3 RMS; the Triton interpreter truncates).
REL_RMS: dict[torch.dtype, float] = {
    torch.float32: 2e-4,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}

CLOSE: dict[str, dict[str, float]] = {
    # the same operations in the same order: bit-identical
    "exact": dict(rtol=0.0, atol=0.0),
    # a float64 path against the float64 oracle: differences are summation order only
    "fp64_oracle": dict(rtol=1e-9, atol=1e-9),
    "fp64_oracle_grad": dict(rtol=1e-8, atol=1e-9),
    # torch.autograd.gradcheck in float64 with eps = 1e-6: finite differences are good to ~eps
    "fp64_gradcheck": dict(atol=1e-6),
    # fp32, the same arithmetic fused differently (one Linear vs the dt product in the step)
    "fp32_refused": dict(rtol=1e-6, atol=1e-6),
    # fp32 recurrent step vs the parallel forward of a few-layer model (different summation order per step)
    "fp32_step_vs_parallel": dict(rtol=1e-4, atol=1e-5),
    # fp32 chunked prefill vs one parallel forward over the same prefix (the same scan, cut once)
    "fp32_prefix": dict(rtol=1e-5, atol=1e-6),
    # fp32 scan of 2^16 steps cut in two halves with initial_state vs one pass
    "fp32_split_scan": dict(rtol=1e-5, atol=1e-5),
    # fp32 RC-invariant classifier vs the average of two separate calls (batched vs unbatched rounding)
    "fp32_rc_average": dict(rtol=1e-5, atol=1e-6),
    # fp32 log-likelihood summed over tens of tokens, recorded step by step vs one parallel forward
    "fp32_loglik": dict(rtol=1e-4, atol=1e-3),
    # fp32 logits (scores) of the step vs the parallel forward, and of two decoders
    "fp32_logits": dict(rtol=1e-4, atol=1e-4),
    # bf16 model: CUDA-graph log-likelihood vs the parallel forward over 50 tokens
    "bf16_loglik": dict(rtol=1e-3, atol=1e-2),
    # a waveform through 16-bit PCM: half a quantisation step plus float rounding
    "pcm16": dict(atol=1 / 2**15 + 1e-6),
    # the mean of two 16-bit PCM channels (two roundings)
    "pcm16_mix": dict(atol=1e-4),
    # fp32 CPU losses of the debug models vs the checked-in golden values (tests/test_golden.py): float
    # rounding only. The thread count changes summation order: LMs and SaShiMi bit-identical, classifiers up to
    # 2.7e-6 relative (their pooled BatchNorm over 4 windows divides by a small spread), measured 1-3 threads
    "golden_loss": dict(rtol=2e-5, atol=1e-6),
    # two gloo DDP processes vs one process (tests/test_pretrain_pipeline.py): gradient all-reduce sums in
    # another order every step; losses / bits per base, then the weights after the run
    "ddp_metrics": dict(rtol=2e-4),
    "ddp_weights": dict(rtol=1e-3, atol=1e-4),
    # float32 softmax rows summing to one
    "probability_sum": dict(atol=1e-6),
    # fp32 BatchNorm of a few 5-wide rows: standardised outputs and running statistics (eps = 1e-5 included)
    "fp32_batchnorm": dict(rtol=1e-5, atol=1e-5),
    # fp32 per-batch sums of an evaluation split into parts vs the whole (summation order)
    "fp32_partial_sums": dict(rtol=1e-6),
}

# Relative L2 error of the reference scan fed low-precision inputs vs the float64 oracle fed the same rounded
# inputs: only the output rounding and the fp32 state are left.
SCAN_LOW_PRECISION: dict[torch.dtype, float] = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
# Greedy decoding may pick another token than the parallel forward's argmax only where the two logits are this
# close (fp32: rounding of the step; bf16: its 8-bit mantissa at logits of size ~10).
LOGIT_GAP: dict[str, float] = {"fp32": 1e-3, "bf16": 0.25, "fp32_cpu": 1e-4}
# Largest |logit| difference of a checkpoint loaded from mamba-ssm / transformers, fp32 (the target).
FOREIGN_LOGITS = 1e-5
# Largest |frequency - probability| of 40,000 draws over 12 tokens: ~6 standard deviations of the worst token.
SAMPLING_FREQUENCY = 0.015
