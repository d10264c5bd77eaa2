"""The static listening page (mambaseq.audio.listen): it parses, every file it links exists, text is escaped,
broken links are refused before writing, and where a Chromium/Chrome is installed it loads headless with one
player per clip."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from mambaseq.audio import save_wav
from mambaseq.audio.features import save_mel
from mambaseq.audio.listen import Clip, Section, write_listening_page
from seeding import rng_for

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def page(tmp_path, request):
    """A page over 3 clips: a row of two (source, continuation) and a row of one."""
    rng = rng_for(request)
    (tmp_path / "samples" / "mel").mkdir(parents=True)
    clips = []
    for name in ("src_000", "cont_000", "gen_000"):
        wave = (0.1 * rng.standard_normal(4000)).astype(np.float32)
        save_wav(tmp_path / "samples" / f"{name}.wav", wave)
        save_mel(tmp_path / "samples" / "mel" / f"{name}.png", wave)
        clips.append(Clip(f"samples/{name}.wav", f"samples/mel/{name}.png", f"{name}: <real> & 'seven'"))
    sections = [Section("Continuations", [clips[:2]], note="left real, right continued"),
                Section("Samples", [clips[2:]])]
    return write_listening_page(tmp_path / "listen.html", "Run <1>", sections, intro="SYNTHETIC digits")


def test_page_parses_and_every_link_exists(page):
    p = _Page()
    p.feed(page.read_text())
    p.close()
    assert p.tags.count("audio") == 3 and p.tags.count("img") == 3 and "script" not in p.tags
    assert p.links and all((page.parent / link).is_file() for link in p.links)
    assert not [link for link in p.links if "://" in link]  # nothing from the network
    text = "".join(p.text)
    assert "src_000: <real> & 'seven'" in text and "Run <1>" in text  # escaped in the file, intact when parsed
    assert (page.parent / "samples" / "mel" / "gen_000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_or_escaping_links_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav does not exist"):
        write_listening_page(tmp_path / "p.html", "t", [Section("s", [[Clip("missing.wav", None, "x")]])])
    with pytest.raises(ValueError, match="must be a path inside the page's folder"):
        write_listening_page(tmp_path / "p.html", "t", [Section("s", [[Clip("../x.wav", None, "x")]])])
    assert not (tmp_path / "p.html").exists()


def test_page_loads_in_headless_chromium(page):
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip(f"no Chromium/Chrome on PATH (looked for {', '.join(BROWSERS)})")
    # --dump-dom prints the DOM after load: the players are there, and the page's images decoded (naturalWidth
    # is only known to a script, so the check is that the DOM is the page's, with every element)
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Page()
    dom.feed(out.stdout)
    assert dom.tags.count("audio") == 3 and dom.tags.count("img") == 3
    assert sorted(dom.links) == sorted(_links(page))


def _links(page) -> list[str]:
    p = _Page()
    p.feed(page.read_text())
    return p.links
