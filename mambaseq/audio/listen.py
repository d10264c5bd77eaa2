"""A static listening page: WAV players and mel-spectrogram images side by side, as one HTML file.

    page = write_listening_page(run / "listen.html", "SaShiMi on SYNTHETIC digits", [
        Section("Continuations", [[Clip("samples/src_000.wav", "samples/mel/src_000.png", "real: seven"),
                                   Clip("samples/cont_000.wav", "samples/mel/cont_000.png", "heard: seven")]]),
    ])

The page is plain HTML with an inline style sheet: no script, no font or style from the network, so it opens
from the file system (``file://``) or any static server, and the run folder can be copied whole. Every file
it links is given relative to the page and checked to exist before the page is written.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mambaseq.fileio import atomic_write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}td{vertical-align:top;padding:4px 10px 10px 0}
figure{margin:0}audio{width:320px;display:block}img{display:block;border:1px solid #ccc}
figcaption{font-size:12px;max-width:320px}p.note{max-width:60em}"""


@dataclass(frozen=True)
class Clip:
    """One cell: ``audio`` (a WAV path relative to the page), ``image`` (its mel-spectrogram PNG, relative to
    the page, or None) and a one-line ``caption`` (plain text; escaped on writing)."""

    audio: str
    image: str | None
    caption: str


@dataclass(frozen=True)
class Section:
    """A heading, an optional plain-text note, and rows of clips shown side by side (one table row each)."""

    heading: str
    rows: Sequence[Sequence[Clip]]
    note: str = ""


def _check_links(page_dir: Path, sections: Sequence[Section]) -> None:
    for sec in sections:
        for row in sec.rows:
            for clip in row:
                for rel in (clip.audio, clip.image):
                    if rel is None:
                        continue
                    if Path(rel).is_absolute() or ".." in Path(rel).parts:
                        raise ValueError(f"listening page: {rel!r} must be a path inside the page's folder")
                    if not (page_dir / rel).is_file():
                        raise FileNotFoundError(f"listening page: {page_dir / rel} does not exist")


def _cell(clip: Clip) -> str:
    src = html.escape(Path(clip.audio).as_posix(), quote=True)
    parts = [f'<audio controls preload="none" src="{src}"></audio>']
    if clip.image is not None:
        img = html.escape(Path(clip.image).as_posix(), quote=True)
        parts.append(f'<img src="{img}" width="320" height="160" alt="mel spectrogram of {src}">')
    parts.append(f"<figcaption>{html.escape(clip.caption)}</figcaption>")
    return f"<td><figure>{''.join(parts)}</figure></td>"


def render_listening_page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    """The page as an HTML5 string: a ``<table>`` per section, a ``<figure>`` per clip holding an
    ``<audio controls>`` player, the spectrogram ``<img>`` and the caption. Text is HTML-escaped."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(f'<p class="note">{html.escape(intro)}</p>')
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.heading)}</h2>")
        if sec.note:
            body.append(f'<p class="note">{html.escape(sec.note)}</p>')
        body.append("<table>")
        body += [f"<tr>{''.join(_cell(c) for c in row)}</tr>" for row in sec.rows]
        body.append("</table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_listening_page(path: str | os.PathLike, title: str, sections: Sequence[Section], intro: str = "") -> Path:
    """Write ``render_listening_page`` to ``path`` atomically. Every clip's audio and image path is relative
    to the page's folder; FileNotFoundError names the first that does not exist, ValueError one that is
    absolute or leaves the folder (the page must survive being copied with its run)."""
    p = Path(path)
    _check_links(p.parent, sections)
    return atomic_write_text(p, render_listening_page(title, sections, intro))
