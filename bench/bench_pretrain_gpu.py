"""GPU benchmarks for long-context pretraining (issue 6). Prints a table and writes bench/results/*.json
(copied to $OUT when that is set, for the lent GPU machines).

    python bench/bench_pretrain_gpu.py memory                   # H100: 6 x 128 model at L = 2^16, 2^18, 2^20
    python bench/bench_pretrain_gpu.py scaling --nproc 2        # 2 x H200: DDP throughput + loss-curve match
    python bench/bench_pretrain_gpu.py memory --device cpu --lengths 1024 2048 --n-layer 2 --d-model 16  # dry run
    python bench/bench_pretrain_gpu.py scaling --nproc 2 --tiny                                        # dry run (gloo)

memory: one training step = forward + backward + AdamW on batch 1 x L random bases (throughput does not
depend on the data; bf16 autocast on CUDA), with and without per-block activation checkpointing. Each
(L, checkpointing) runs in its own process (a clean allocator, and an out-of-memory or a crashed kernel
cannot spoil the next configuration) under a timeout; reports tokens/s (median of the timed steps, after
warm-up steps that include Triton compilation) and torch.cuda.max_memory_allocated. An out-of-memory
configuration is recorded as such and the sweep goes on.

scaling: runs the real pipeline (``python -m mambaseq.pipelines.pretrain train``) under torchrun with 1 and
with N processes at the same GLOBAL batch on the SYNTHETIC genome (the GPU machines have no vt-examples),
logging every step; compares steady-state global tokens/s (warm-up steps excluded) and the per-step training
losses (max |difference| over the run). NCCL on CUDA (NVLink multicast off: NCCL_NVLS_ENABLE=0 etc.), gloo on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RESULT_TAG = "RESULT "  # the child's one-line JSON answer on stdout

# the GPU run: the issue's 6 x 128 model, 2^19 tokens per optimizer step (64 windows of 8192 bases, global)
SCALING_GPU = ["model=small", "+model.n_layer=6", "data.seq_len=8192", "train.batch_size=64", "train.max_steps=150",
               "train.warmup_steps=15", "train.max_time_s=150", "eval.val_tokens=262144"]
# the CPU dry run: the debug model, seconds per run
SCALING_TINY = ["model=debug", "data.seq_len=128", "train.batch_size=8", "train.max_steps=12", "train.warmup_steps=2",
                "data.sim_length=300000", "data.region_size=32768", "eval.val_tokens=1024", "eval.batch_tokens=1024"]


def save_result(obj: Any, name: str) -> list[Path]:
    """Write ``obj`` as JSON to bench/results/<name> (atomically) and to $OUT/<name> when $OUT is set."""
    from mambaseq.fileio import write_json  # here: the parent process imports no torch

    dests = [RESULTS / name] + ([Path(os.environ["OUT"]) / name] if os.environ.get("OUT") else [])
    written = []
    for path in dests:
        try:
            written.append(write_json(obj, path))
        except OSError as e:  # a read-only checkout must not lose the $OUT copy
            print(f"could not write {path}: {e}", file=sys.stderr)
    return written


# --- memory: one configuration per child process ---------------------------------------------------------
def memory_one(seq_len: int, ckpt: bool, steps: int, warmup: int, n_layer: int, d_model: int, device: str) -> dict:
    """Train steps on (1, seq_len + 1) random bases in THIS process -> tokens/s and peak memory."""
    import torch

    from mambaseq import MambaConfig, MambaLMHeadModel
    from mambaseq.data import VOCAB
    from mambaseq.training import autocast_context, build_optimizer, lm_loss

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("memory benchmark on cuda needs a CUDA GPU (use --device cpu for a dry run)")
    row: dict[str, Any] = {"seq_len": seq_len, "checkpoint_activations": ckpt, "n_layer": n_layer,
                           "d_model": d_model, "batch": 1, "precision": "bf16 autocast" if cuda else "fp32",
                           "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__}
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        torch.manual_seed(0)
        cfg = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=len(VOCAB), checkpoint_activations=ckpt)
        model = MambaLMHeadModel(cfg).to(dev).train()
        row["n_params"] = sum(p.numel() for p in model.parameters())
        opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
        x = torch.randint(0, 4, (1, seq_len + 1), device=dev)
        times = []
        for i in range(warmup + steps):  # warm-up: Triton compilation, allocator growth
            if cuda:
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            with autocast_context(dev, "auto"):
                loss, _ = lm_loss(model, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
            elif i == 0:
                row["first_step_s"] = dt
        med = statistics.median(times)
        row.update(tokens_per_s=seq_len / med, step_ms=1e3 * med, step_ms_all=[1e3 * t for t in times],
                   loss=float(loss.detach()))
    except torch.OutOfMemoryError as e:
        row.update(tokens_per_s=None, error="out of memory", detail=str(e).splitlines()[0][:300])
    if cuda:
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(dev) / 2**30
    else:  # CPU dry run: the child's peak resident set (KiB on Linux)
        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def bench_memory(args: argparse.Namespace) -> list[dict]:
    """Every (L, checkpointing) in a child process with a timeout; results saved after each one."""
    rows: list[dict] = []
    t_start = time.perf_counter()
    for L in args.lengths:
        for ckpt in (False, True):
            base = {"seq_len": L, "checkpoint_activations": ckpt, "n_layer": args.n_layer, "d_model": args.d_model}
            left = args.budget_s - (time.perf_counter() - t_start)
            if left < 20:
                row = {**base, "tokens_per_s": None, "error": f"skipped: --budget-s {args.budget_s} used up"}
            else:
                row = _memory_child(args, L, ckpt, min(args.timeout_per_config, left), base)
            rows.append(row)
            tps = f"{row['tokens_per_s']:>12,.0f}" if row.get("tokens_per_s") else f"{'-':>12}"
            mem = row.get("peak_memory_gib", row.get("peak_rss_gib"))
            mem_s = f"{mem:>8.2f}" if mem is not None else f"{'-':>8}"
            print(f"L={L:>9,}  ckpt={str(ckpt):>5}  tokens/s {tps}  peak GiB {mem_s}  "
                  f"{row.get('error', '')}", flush=True)
            save_result(rows, args.out_name)
    return rows


def _memory_child(args: argparse.Namespace, L: int, ckpt: bool, timeout: float, base: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "memory-one", "--seq-len", str(L), "--ckpt", str(int(ckpt)),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--n-layer", str(args.n_layer),
           "--d-model", str(args.d_model), "--device", args.device]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        sys.stderr.write(err)
        return {**base, "tokens_per_s": None, "error": f"timed out after {timeout:.0f} s",
                "stderr_tail": err.strip().splitlines()[-5:]}
    sys.stderr.write(r.stderr)  # the child's log (backend choice, warnings, tracebacks) into ours
    found = [ln[len(RESULT_TAG):] for ln in r.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if r.returncode != 0 or not found:
        return {**base, "tokens_per_s": None, "error": f"child exited with {r.returncode}",
                "stderr_tail": r.stderr.strip().splitlines()[-5:]}
    return {**json.loads(found[-1]), "child_wall_s": time.perf_counter() - t0}


# --- scaling: the real pipeline under torchrun ----------------------------------------------------------------
_CHILD_GROUPS: set[int] = set()  # process groups of running torchrun launches (stopped on SIGTERM too)


def _stop_children(signum: int, frame: Any) -> None:
    """SIGTERM (e.g. an outer ``timeout``): stop the torchrun groups we started, then exit."""
    for pgid in list(_CHILD_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def _launch(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group; on timeout stop that group (torchrun and its workers).
    -> (return code or None on timeout, wall seconds)."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    _CHILD_GROUPS.add(proc.pid)
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"timed out after {timeout:.0f} s: stopping process group {proc.pid}", flush=True)
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        rc = None
    _CHILD_GROUPS.discard(proc.pid)
    return rc, time.perf_counter() - t0


def _pipeline_run(nproc: int, out: Path, overrides: list[str], env: dict[str, str], timeout: float,
                  skip: int) -> dict:
    """One ``pretrain train`` under torchrun -> per-step losses, steady-state global tokens/s, summary."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mambaseq.pipelines.pretrain", "train", *overrides, f"out_dir={out}"]
    rc, wall = _launch(cmd, env, timeout)
    res: dict[str, Any] = {"nproc": nproc, "returncode": rc, "wall_s": wall}
    if rc != 0:
        res["error"] = "timed out" if rc is None else f"exited with {rc}"
    runs = [p for p in out.iterdir() if (p / "metrics.csv").is_file()] if out.is_dir() else []
    if not runs:  # partial metrics still count: metrics.csv is flushed every step
        return res
    from mambaseq.training import read_metrics

    m = read_metrics(runs[0])
    tps = [v for _, v in m.get("train/tokens_per_s", [])]
    steady = tps[skip:]  # steps after warm-up (first steps compile the Triton kernels)
    res.update(steps=[s for s, _ in m.get("train/loss", [])], loss=[v for _, v in m.get("train/loss", [])],
               step_tokens_per_s=tps, val_bits_per_base=[v for _, v in m.get("val/bits_per_base", [])])
    if steady:
        # every step has the same token count, so tokens / time over the steady steps is the harmonic mean
        res.update(tokens_per_s=len(steady) / sum(1 / v for v in steady),
                   tokens_per_s_median=statistics.median(steady), steady_steps=len(steady))
    summary = runs[0] / "train_summary.json"
    if summary.is_file():
        res["summary"] = json.loads(summary.read_text())
        res["peak_memory_gib"] = res["summary"].get("peak_memory_gib")  # rank 0's device
    return res


def _pair(nproc: int, tmp: Path, tag: str, base: list[str], env: dict[str, str], skip: int, timeout: float,
          deadline: float) -> dict:
    """1 process then ``nproc`` processes on the same overrides -> both runs + speedup + loss differences."""
    runs = {}
    for n in (1, nproc):
        left = deadline - time.perf_counter()
        if left < 30:
            runs[n] = {"nproc": n, "error": "skipped: --budget-s used up"}
            continue
        runs[n] = _pipeline_run(n, tmp / f"{tag}_p{n}", base, env, min(timeout, left), skip)
    one, many = runs[1], runs[nproc]
    res: dict[str, Any] = {"run_1": one, f"run_{nproc}": many}
    if one.get("tokens_per_s") and many.get("tokens_per_s"):
        res.update(tokens_per_s_1=one["tokens_per_s"], **{f"tokens_per_s_{nproc}": many["tokens_per_s"]},
                   speedup=many["tokens_per_s"] / one["tokens_per_s"],
                   speedup_median=many["tokens_per_s_median"] / one["tokens_per_s_median"])
    n = min(len(one.get("loss", [])), len(many.get("loss", [])))
    if n:  # same global batch at every step: the curves should agree up to numerical noise
        d = [abs(a - b) for a, b in zip(one["loss"][:n], many["loss"][:n])]
        res.update(compared_steps=n, max_abs_loss_diff=max(d), mean_abs_loss_diff=sum(d) / n,
                   max_abs_loss_diff_first10=max(d[:10]),
                   max_rel_loss_diff=max(x / abs(a) for x, a in zip(d, one["loss"])),
                   final_loss_1=one["loss"][n - 1], **{f"final_loss_{nproc}": many["loss"][n - 1]})
    if one.get("val_bits_per_base") and many.get("val_bits_per_base"):
        res.update(val_bits_1=one["val_bits_per_base"][-1],
                   **{f"val_bits_{nproc}": many["val_bits_per_base"][-1]})
    return res


def bench_scaling(args: argparse.Namespace) -> dict:
    """1 process, then ``nproc`` processes, same global batch -> speedup and loss-curve match; then, if the
    budget allows, a short fp32 pair (bf16 autocast noise removed: the curves should then agree closely)."""
    deadline = time.perf_counter() + args.budget_s
    signal.signal(signal.SIGTERM, _stop_children)
    cuda = _cuda_available() and not args.tiny
    overrides = list(args.overrides or (SCALING_TINY if args.tiny else SCALING_GPU))
    # NVLink multicast stays off on the shared GPU hosts (NCCL, PyTorch symmetric memory, NVSHMEM)
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
           "NVSHMEM_DISABLE_NVLS": "1", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4" if cuda else "1")}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --tiny: gloo on the CPU even where a GPU exists
    base = ["data.source=simulated", "train.progress=false", "train.log_every=1", "train.ckpt_every=0",
            "train.eval_every=0"] + ([] if args.tiny else ["data.region_size=1048576"]) + overrides
    res: dict[str, Any] = {"nproc": args.nproc, "backend": "nccl" if cuda else "gloo", "overrides": base,
                           "warmup_steps_excluded": args.skip}
    with tempfile.TemporaryDirectory(prefix="pretrain_ddp_") as tmp:
        data = [f"data.out_root={tmp}/data"]  # one genome store for every run (prepared by the first)
        res.update(_pair(args.nproc, Path(tmp), "bf16", base + data, env, args.skip, args.timeout_per_run,
                         deadline))
        if args.fp32_steps > 0:
            fp32 = base + data + ["train.precision=fp32", f"train.max_steps={args.fp32_steps}",
                                  "eval.val_tokens=65536"]
            if deadline - time.perf_counter() > args.fp32_min_left:
                res["fp32_check"] = _pair(args.nproc, Path(tmp), "fp32", fp32, env, min(args.skip, 3),
                                          args.timeout_per_run, deadline)
            else:
                res["fp32_check"] = {"error": f"skipped: under {args.fp32_min_left:.0f} s of budget left"}
    res["device"] = _device_name() if cuda else "cpu"
    return res


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _device_name() -> str:
    import torch

    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}"


def _headline(res: dict) -> dict:
    """The scaling result without the long per-step arrays (for the console / output tail)."""
    drop = ("steps", "loss", "step_tokens_per_s", "overrides", "summary")
    return {k: (_headline(v) if isinstance(v, dict) else v) for k, v in res.items() if k not in drop}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("memory", "memory-one"):
        m = sub.add_parser(name, help="peak memory and tokens/s per (L, checkpointing)" if name == "memory"
                           else "(internal) one configuration in this process")
        m.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
        m.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
        m.add_argument("--n-layer", type=int, default=6)
        m.add_argument("--d-model", type=int, default=128)
        m.add_argument("--device", default="cuda", help="cuda | cpu (cpu: a dry run of the logic, tiny L)")
        if name == "memory":
            m.add_argument("--lengths", type=int, nargs="+", default=[2**16, 2**18, 2**20])
            m.add_argument("--timeout-per-config", type=float, default=150.0, help="seconds per child process")
            m.add_argument("--budget-s", type=float, default=460.0, help="skip configurations after this")
            m.add_argument("--out-name", default="pretrain_memory.json")
        else:
            m.add_argument("--seq-len", type=int, required=True)
            m.add_argument("--ckpt", type=int, choices=(0, 1), required=True)
    s = sub.add_parser("scaling", help="DDP throughput scaling and loss-curve match")
    s.add_argument("--nproc", type=int, default=2)
    s.add_argument("--tiny", action="store_true", help="CPU dry run: debug model, gloo, seconds")
    s.add_argument("--skip", type=int, default=None, help="warm-up steps left out of tokens/s (default 10; tiny 3)")
    s.add_argument("--timeout-per-run", type=float, default=260.0, help="seconds per torchrun launch")
    s.add_argument("--budget-s", type=float, default=470.0, help="no launch starts after this many seconds")
    s.add_argument("--fp32-steps", type=int, default=0, help="> 0: also an fp32 pair of this many steps")
    s.add_argument("--fp32-min-left", type=float, default=180.0, help="...run only with this much budget left")
    s.add_argument("--out-name", default=None, help="default pretrain_ddp_<nproc>.json")
    s.add_argument("overrides", nargs="*", help="pipeline overrides replacing the defaults (global batch must "
                   f"divide by --nproc); GPU default: {' '.join(SCALING_GPU)}")
    args = ap.parse_args(argv)
    if args.what == "memory-one":
        import logging

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # backend choice
        row = memory_one(args.seq_len, bool(args.ckpt), args.steps, args.warmup, args.n_layer, args.d_model,
                         args.device)
        print(RESULT_TAG + json.dumps(row, default=float), flush=True)
        return 0
    if args.what == "memory":
        rows = bench_memory(args)
        paths = save_result(rows, args.out_name)
        print(json.dumps([{k: v for k, v in r.items() if k != "step_ms_all"} for r in rows], default=float))
    else:
        if args.skip is None:
            args.skip = 3 if args.tiny else 10
        res = bench_scaling(args)
        paths = save_result(res, args.out_name or f"pretrain_ddp_{args.nproc}.json")
        for tag, r in (("bf16" if res["backend"] == "nccl" else "", res), ("fp32", res.get("fp32_check", {}))):
            if "speedup" in r and "max_abs_loss_diff" in r:
                print(f"{tag} {args.nproc} processes: {r['speedup']:.3f}x of one ({r['tokens_per_s_1']:,.0f} -> "
                      f"{r[f'tokens_per_s_{args.nproc}']:,.0f} global tokens/s, steady state); per-step loss max "
                      f"|diff| {r['max_abs_loss_diff']:.2e} over {r['compared_steps']} steps")
        print(json.dumps(_headline(res), default=float))
    print("->", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
