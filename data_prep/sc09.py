"""SC09 spoken digits: the real Speech Commands layout, or a default synthetic set made with espeak-ng + sox.

Output: one folder in the layout ``mambaseq.audio.digits`` reads (``{train,val,test}_audio.npy`` int16
(n, 16000), ``*_labels.npy``, ``manifest.json``, ``clips.csv``), built in a temporary folder and renamed
(``mambaseq.fileio.atomic_dir``), so it is either complete or absent. Re-running with the same parameters
is a no-op (the manifest's `params` match).

Synthetic set: every espeak-ng voice variant (timbre, e.g. m3, f2, klatt4: ~100) speaks each digit with a few
English accents (en-us, en-gb-scotland, ...) at random speed, pitch, loudness and onset. The split is by
variant, so no voice (variant, with any accent) is in more than one split. Everything written says
`synthetic: true`: these are not human recordings and numbers on them are not SC09 numbers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mambaseq.audio.digits import CLIP_LEN, DIGITS, SPLITS
from mambaseq.audio.io import SAMPLE_RATE, AudioError, fix_length, load_audio
from mambaseq.fileio import atomic_dir

LAYOUT = 2  # 2: split "val" (was "valid"); part of the parameters, so an older set is rebuilt
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
APT_HINT = "install them with: sudo apt-get install -y espeak-ng sox"


@dataclass(frozen=True)
class SynthParams:
    """Build parameters of the synthetic set (stored in the manifest; a change triggers a rebuild)."""

    accents_per_voice: int = 3
    takes: int = 1  # renditions of each digit per (voice, accent)
    speed_wpm: tuple[int, int] = (120, 230)
    pitch: tuple[int, int] = (15, 85)
    val_frac: float = 0.1
    test_frac: float = 0.15
    seed: int = 0
    max_voices: int = 0  # 0 = all variants; small values make quick test sets


def params_hash(d: dict) -> str:
    """Short identity of a set's build parameters (the manifest's ``params_hash``)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _already_built(out: Path, params: dict) -> bool:
    m = out / "manifest.json"
    return m.is_file() and json.loads(m.read_text()).get("params_hash") == params_hash(params)


def _write_atomic(out: Path, build) -> Path:
    """Run build(tmp_dir) then swap the finished folder into place (never half-written)."""
    with atomic_dir(out, prefix=f".{out.name}.building-") as tmp:
        build(tmp)
    return out


def _save_splits(tmp: Path, clips: dict[str, list[tuple[np.ndarray, int, dict]]], manifest: dict) -> None:
    rows = []
    for split in SPLITS:
        items = clips[split]
        audio = np.stack([a for a, _, _ in items]) if items else np.zeros((0, CLIP_LEN), np.float32)
        pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
        np.save(tmp / f"{split}_audio.npy", pcm)
        np.save(tmp / f"{split}_labels.npy", np.array([lab for _, lab, _ in items], dtype=np.int64))
        rows += [{"split": split, "label": lab, **meta} for _, lab, meta in items]
        manifest["splits"][split]["clips"] = len(items)
        manifest["splits"][split]["per_digit"] = np.bincount([lab for _, lab, _ in items], minlength=10).tolist()
    with open(tmp / "clips.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: (k != "split", k)))
        w.writeheader()
        w.writerows(rows)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))


# ----------------------------------------------------------------------------- synthetic (espeak-ng + sox)

def list_variants() -> list[str]:
    """espeak-ng voice variants (timbres) installed here, sorted."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if len(line.split()) >= 5}
    return sorted(names)


def _render(word: str, voice: str, speed: int, pitch: int, gain_db: float) -> np.ndarray:
    """espeak-ng -> sox (16 kHz mono, silence trimmed at both ends, peak-normalised to gain_db) -> float32."""
    esp = subprocess.Popen(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sox = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                          "-e", "signed-integer", "-",
                          "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse",
                          "norm", f"{gain_db:.1f}"], stdin=esp.stdout, capture_output=True)
    esp.stdout.close()
    esp.wait()
    if esp.returncode != 0 or sox.returncode != 0:
        raise RuntimeError(f"espeak-ng/sox failed for voice {voice!r} word {word!r}: "
                           f"{esp.stderr.read().decode()[:200]} {sox.stderr.decode()[:200]}")
    return np.frombuffer(sox.stdout, dtype=np.int16).astype(np.float32) / 32768.0


def _make_clip(job: dict) -> tuple[np.ndarray, int, dict]:
    x = _render(DIGITS[job["label"]], job["voice"], job["speed"], job["pitch"], job["gain_db"])
    for _ in range(3):  # too slow to fit 1 s (with a margin): say it faster rather than cut the word
        if len(x) <= int(0.95 * CLIP_LEN):
            break
        job["speed"] = int(job["speed"] * len(x) / (0.9 * CLIP_LEN)) + 1
        x = _render(DIGITS[job["label"]], job["voice"], job["speed"], job["pitch"], job["gain_db"])
    x = x[:CLIP_LEN]
    # random onset within the second, as in real recordings (the classifier must not rely on position)
    start = int(job["onset_frac"] * (CLIP_LEN - len(x)))
    clip = np.zeros(CLIP_LEN, np.float32)
    clip[start : start + len(x)] = x
    meta = {k: job[k] for k in ("speaker", "voice", "speed", "pitch", "gain_db")}
    return clip, job["label"], meta


def synthetic_params(params: SynthParams) -> dict:
    """The manifest's ``params`` of a synthetic set built with ``params``."""
    return {"kind": "synthetic-espeak", "layout": LAYOUT, **asdict(params)}


def build_synthetic(out_dir: str | os.PathLike, params: SynthParams = SynthParams(), workers: int = 4) -> Path:
    """Build (or reuse) the synthetic spoken-digit set in `out_dir`; returns its path."""
    out = Path(out_dir)
    pdict = synthetic_params(params)
    if _already_built(out, pdict):  # a prebuilt set (e.g. carried to a GPU machine) needs no espeak-ng/sox
        return out
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; the default spoken-digit set needs espeak-ng and sox: "
                               f"{APT_HINT} (or point --sc09-dir to a real Speech Commands folder)")
    rng = np.random.default_rng(params.seed)
    variants = list_variants()
    rng.shuffle(variants)
    if params.max_voices:
        variants = variants[: params.max_voices]
    n_test = max(1, round(params.test_frac * len(variants)))
    n_val = max(1, round(params.val_frac * len(variants)))
    split_of = {v: ("test" if i < n_test else "val" if i < n_test + n_val else "train")
                for i, v in enumerate(variants)}
    jobs = []
    for v in variants:
        for acc in rng.choice(ACCENTS, size=min(params.accents_per_voice, len(ACCENTS)), replace=False):
            for label in range(10):
                for _ in range(params.takes):
                    jobs.append({"split": split_of[v], "label": label, "speaker": v, "voice": f"{acc}+{v}",
                                 "speed": int(rng.integers(*params.speed_wpm)),
                                 "pitch": int(rng.integers(*params.pitch)),
                                 "gain_db": round(float(rng.uniform(-12, -1)), 1),
                                 "onset_frac": float(rng.uniform(0, 1))})

    def build(tmp: Path) -> None:
        clips: dict[str, list] = {s: [] for s in SPLITS}
        with ThreadPoolExecutor(workers) as ex:  # the work happens in subprocesses: threads suffice
            for job, res in zip(jobs, tqdm(ex.map(_make_clip, jobs), total=len(jobs), desc="espeak digits")):
                clips[job["split"]].append(res)
        manifest = {
            "synthetic": True,
            "note": "SYNTHETIC speech (espeak-ng formant synthesis), not human recordings; split by voice variant",
            "source": "espeak-ng " + subprocess.run(["espeak-ng", "--version"], capture_output=True,
                                                     text=True).stdout.strip(),
            "sample_rate": SAMPLE_RATE, "clip_samples": CLIP_LEN, "digits": list(DIGITS),
            "params": pdict, "params_hash": params_hash(pdict),
            "splits": {s: {"speakers": sorted(v for v in variants if split_of[v] == s)} for s in SPLITS},
        }
        _save_splits(tmp, clips, manifest)

    return _write_atomic(out, build)


# ----------------------------------------------------------------------------- real Speech Commands (SC09)

def build_speech_commands(src_dir: str | os.PathLike, out_dir: str | os.PathLike, on_error: str = "raise") -> Path:
    """Convert a Speech Commands folder (zero/ ... nine/ + validation_list.txt + testing_list.txt) to our layout.

    Clips are mixed to mono, resampled to 16 kHz and centred/padded to 1 s. A bad clip raises AudioError
    naming it (`on_error="raise"`) or is skipped and listed in the manifest (`on_error="skip"`).
    """
    src, out = Path(src_dir), Path(out_dir)
    missing = [d for d in DIGITS if not (src / d).is_dir()]
    lists = {"val": src / "validation_list.txt", "test": src / "testing_list.txt"}
    if missing or not all(p.is_file() for p in lists.values()):
        raise ValueError(f"{src}: not a Speech Commands folder: expected digit folders zero/ ... nine/ and "
                         f"validation_list.txt, testing_list.txt (missing: "
                         f"{missing + [p.name for p in lists.values() if not p.is_file()]})")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    files = sorted(str(p.relative_to(src)) for d in DIGITS for p in (src / d).glob("*.wav"))
    stat = [f"{f}:{(src / f).stat().st_size}" for f in files]
    pdict = {"kind": "speech-commands", "layout": LAYOUT, "source": str(src.resolve()),
             "files": params_hash({"f": stat}), "on_error": on_error}
    if _already_built(out, pdict):
        return out
    in_list = {s: set(p.read_text().split()) for s, p in lists.items()}
    split_of = {f: "test" if f in in_list["test"] else "val" if f in in_list["val"] else "train" for f in files}

    def build(tmp: Path) -> None:
        clips: dict[str, list] = {s: [] for s in SPLITS}
        skipped, speakers = [], {s: set() for s in SPLITS}
        for f in tqdm(files, desc="speech commands"):
            try:
                x = load_audio(src / f, min_seconds=0.01)
            except AudioError as e:
                if on_error == "raise":
                    raise
                skipped.append(str(e))
                continue
            spk = Path(f).name.split("_nohash_")[0]
            speakers[split_of[f]].add(spk)
            clips[split_of[f]].append((fix_length(x, CLIP_LEN), DIGITS.index(Path(f).parent.name),
                                       {"speaker": spk, "file": f}))
        manifest = {"synthetic": False, "note": "Speech Commands digits (SC09), official validation/testing lists",
                    "source": str(src.resolve()), "sample_rate": SAMPLE_RATE, "clip_samples": CLIP_LEN,
                    "digits": list(DIGITS), "params": pdict, "params_hash": params_hash(pdict),
                    "skipped": skipped, "splits": {s: {"speakers": sorted(speakers[s])} for s in SPLITS}}
        _save_splits(tmp, clips, manifest)

    return _write_atomic(out, build)


def prepare(out_dir: str | os.PathLike, sc09_dir: str | os.PathLike | None = None,
            params: SynthParams = SynthParams(), workers: int = 4) -> Path:
    """Real Speech Commands digits when `sc09_dir` is given, else the synthetic espeak-ng set."""
    if sc09_dir:
        return build_speech_commands(sc09_dir, out_dir)
    return build_synthetic(out_dir, params, workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/sc09", help="output directory")
    ap.add_argument("--sc09-dir", default=None, help="a real Speech Commands folder (else synthetic espeak-ng)")
    ap.add_argument("--accents-per-voice", type=int, default=SynthParams.accents_per_voice)
    ap.add_argument("--takes", type=int, default=SynthParams.takes)
    ap.add_argument("--max-voices", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    p = prepare(a.out, a.sc09_dir, SynthParams(accents_per_voice=a.accents_per_voice, takes=a.takes,
                                               max_voices=a.max_voices, seed=a.seed))
    m = json.loads((p / "manifest.json").read_text())
    print(f"{p}: {'SYNTHETIC ' if m['synthetic'] else ''}digits "
          + ", ".join(f"{s} {m['splits'][s]['clips']} clips / {len(m['splits'][s]['speakers'])} speakers" for s in SPLITS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
