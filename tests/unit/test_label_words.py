"""Classification by label words: scores are label-token log-probabilities after the prompt."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgeloom.algos.common.label_words import (
    LabelTask,
    label_accuracy,
    label_examples,
    label_ids,
    label_scores,
    prompt_ids,
)
from edgeloom_testkit.tiny_llms import tiny_llama, word_tokenizer

TASK = LabelTask("w1 w2 w3", ("w5", "w6 w7", "w8"), max_text_tokens=4)
TEXTS = ["w10 w11 w12", "w20 w21 w22 w23 w24 w25", "w30"]


def test_a_score_is_the_label_tokens_log_probability_after_the_prompt() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer()
    scores = label_scores(model, tokenizer, TASK, TEXTS, batch_size=4)
    assert scores.shape == (3, 3)
    prompt, word = prompt_ids(tokenizer, TASK, TEXTS[1]), label_ids(tokenizer, TASK)[1]
    with torch.no_grad():
        log_probs = F.log_softmax(model(input_ids=torch.tensor([prompt + word])).logits, -1)[0]
    manual = sum(log_probs[len(prompt) - 1 + i, t] for i, t in enumerate(word))
    torch.testing.assert_close(scores[1, 1], manual)
    # padding in a batch changes nothing
    torch.testing.assert_close(label_scores(model, tokenizer, TASK, TEXTS, batch_size=1), scores)


def test_texts_are_cut_into_a_plain_prompt_after_the_question() -> None:
    tokenizer = word_tokenizer()
    words = tokenizer.decode(prompt_ids(tokenizer, TASK, TEXTS[1])).split()
    assert words[:3] == ["w1", "w2", "w3"]
    start = words.index("w20")
    assert words[start : start + 4] == ["w20", "w21", "w22", "w23"]
    assert "w24" not in words
    [(prompt, label)] = label_examples(tokenizer, TASK, TEXTS[:1], [2])
    assert (
        prompt == prompt_ids(tokenizer, TASK, TEXTS[0]) and label == label_ids(tokenizer, TASK)[2]
    )


def test_accuracy_is_the_share_of_best_scoring_true_labels() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer()
    best = label_scores(model, tokenizer, TASK, TEXTS).argmax(1).tolist()
    assert label_accuracy(model, tokenizer, TASK, TEXTS, best) == 1.0
    wrong = [(b + 1) % 3 for b in best]
    assert label_accuracy(model, tokenizer, TASK, TEXTS, wrong) == 0.0
    with pytest.raises(ValueError, match="as many labels as texts"):
        label_accuracy(model, tokenizer, TASK, TEXTS, [0])


def test_a_task_needs_distinct_label_words() -> None:
    with pytest.raises(ValueError, match="two or more distinct"):
        LabelTask("?", ("yes", "yes"))
