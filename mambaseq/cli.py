"""Command line: ``mambaseq <command> ...`` (same as ``python -m mambaseq``).

Each pipeline lives in its own module with a ``COMMAND`` (``mambaseq.runs.Command``); this file only wires
them (``mambaseq.runs.PIPELINES``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from mambaseq.runs import PIPELINES, load_pipeline
from mambaseq.settings import ConfigError

BENCHES = {
    "cpu": "bench_cpu.py",
    "scan": "bench_scan.py",
    "windows": "bench_windows.py",
}


def _bench_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "bench"


def _run_bench(args: argparse.Namespace) -> int:
    script = _bench_dir() / BENCHES[args.which]
    if not script.is_file():
        print(f"error: {script} not found; benchmarks run from a source checkout (git clone + pip install -e .)",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(script.parent))
    mod = importlib.import_module(script.stem)
    argv0, sys.argv[0] = sys.argv[0], f"mambaseq bench {args.which}"  # the scripts' argparse names itself by it
    try:
        return int(mod.main(args.rest) or 0)
    finally:
        sys.argv[0] = argv0


def _info(args: argparse.Namespace) -> int:
    import torch

    import mambaseq
    from mambaseq.kernels.backend import triton_available

    print(f"mambaseq {mambaseq.__version__}  torch {torch.__version__}  cuda {torch.cuda.is_available()}  "
          f"triton {'yes' if triton_available() else 'no'}  threads {torch.get_num_threads()}")
    try:
        import torchaudio  # noqa: F401

        print("torchaudio: available")
    except Exception as e:  # registry builds fail to import on CPU-only machines
        print(f"torchaudio: not usable here ({type(e).__name__}); audio I/O uses soundfile")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mambaseq", description="Mamba selective SSMs for genomics and audio")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="log kernel backend choices and more; full tracebacks of configuration errors")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions and available backends")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="run a benchmark script (prints a table, writes bench/results/*.json)")
    p.add_argument("which", choices=sorted(BENCHES))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    p.set_defaults(func=_run_bench)
    for name in PIPELINES:
        try:
            mod = load_pipeline(name)
        except ModuleNotFoundError as e:  # e.g. soundfile on a bare GPU image: the other commands still work
            if (e.name or "").startswith("mambaseq"):
                raise  # our own module missing is a bug, not an optional dependency
            p = sub.add_parser(name, help=f"(unavailable here: needs the {e.name!r} package)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_missing(name, e.name))
            continue
        mod.COMMAND.add_to(sub)
    return ap


def _missing(command: str, package: str | None):
    def fail(args: argparse.Namespace) -> int:
        print(f"error: 'mambaseq {command}' needs the Python package {package!r}, which is not installed here "
              f"(pip install {package})", file=sys.stderr)
        return 2

    return fail


def main(argv: list[str] | None = None) -> int:
    """Run a command; a configuration error, a missing file or checkpoint, or a value the library refuses
    (ConfigError, FileNotFoundError, ValueError) prints one line (``error: ...``) and returns 2, unless
    ``-v`` asks for the traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `apes run --resume model=small`: argparse stops taking overrides at the first option
        if getattr(args, "overrides", None) is None or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # a bad setting, a missing file or checkpoint
        # (evaluate before train), a value the library refused: each message names the key or the file
        if args.verbose:
            raise
        msg = " ".join(str(e).split())  # Hydra messages span lines
        print(f"error: {msg} (mambaseq -v {args.command} ... shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
