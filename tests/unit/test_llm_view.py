"""The model layout layer: block-by-block runs, surgery, and pruned save/load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgeloom.models.llm import (
    DECODER_TYPES,
    TransformerView,
    add_output_bias,
    drop_layers,
    keep_head_groups,
    keep_mlp_neurons,
    load_model,
    save_model,
)
from edgeloom_testkit.tiny_llms import (
    tiny_bert,
    tiny_decoder,
    tiny_llama,
    token_batch,
    word_tokenizer,
)


def output_of(model, batch):
    with torch.no_grad():
        if TransformerView(model).family == "decoder":
            return model(input_ids=batch["input_ids"]).logits
        return model(**batch).last_hidden_state


def blockwise(model, batch):
    view = TransformerView(model)
    with torch.no_grad():
        hidden, context = view.embed(batch)
        for layer in view.layers:
            hidden = view.run_layer(layer, hidden, context)
        if view.family == "decoder":
            return model.lm_head(model.model.norm(hidden))
        return hidden


@pytest.mark.parametrize("build", [tiny_llama, tiny_bert])
def test_block_by_block_matches_the_full_forward(build):
    model = build()
    batch = token_batch()
    batch["attention_mask"][0, -3:] = 0  # padding must be masked the same way
    if TransformerView(model).family == "decoder":
        batch.pop("attention_mask")
    torch.testing.assert_close(blockwise(model, batch), output_of(model, batch))


def test_removing_dead_neurons_and_heads_changes_nothing():
    model = tiny_llama(kv_heads=2)
    view = TransformerView(model)
    layer = view.layers[1]
    mlp, attn = view.mlp(layer), view.attention(layer)
    with torch.no_grad():
        mlp.output.weight[:, [2, 7]] = 0
        attn.o.weight[:, attn.o.in_features // 2 :] = 0  # the second kv group's query heads
    batch = token_batch()
    before = output_of(model, batch)
    keep_mlp_neurons(mlp, torch.tensor([i for i in range(mlp.width) if i not in (2, 7)]))
    keep_head_groups(attn, torch.tensor([0]))
    torch.testing.assert_close(output_of(model, batch), before)
    assert (attn.q.out_features, attn.k.out_features, attn.o.in_features) == (32, 16, 32)
    assert view.widths()[1].num_heads == 2 and view.widths()[1].num_kv_heads == 1


def test_dropping_an_identity_block_changes_nothing():
    model = tiny_llama(layers=3)
    view = TransformerView(model)
    with torch.no_grad():
        view.attention(view.layers[1]).o.weight.zero_()
        view.mlp(view.layers[1]).output.weight.zero_()
    batch = token_batch()
    before = output_of(model, batch)
    drop_layers(view, [1])
    assert len(view.layers) == 2 and model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in view.layers] == [0, 1]
    torch.testing.assert_close(output_of(model, batch), before)


def test_cannot_drop_every_layer_or_every_head():
    view = TransformerView(tiny_llama(layers=2))
    with pytest.raises(ValueError, match="every layer"):
        drop_layers(view, [0, 1])
    with pytest.raises(ValueError, match="at least one head group"):
        keep_head_groups(view.attention(view.layers[0]), torch.tensor([], dtype=torch.long))


@pytest.mark.parametrize("build", [tiny_llama, tiny_bert])
def test_pruned_model_reloads_with_identical_outputs(build, tmp_path):
    model = build()
    view = TransformerView(model)
    keep_mlp_neurons(view.mlp(view.layers[0]), torch.arange(0, 96, 3))
    keep_head_groups(view.attention(view.layers[0]), torch.tensor([1]))
    add_output_bias(view.attention(view.layers[1]).o, torch.full((64,), 0.5))
    add_output_bias(view.mlp(view.layers[1]).output, torch.full((64,), -0.25))
    drop_layers(view, [2])
    batch = token_batch()
    expected = output_of(model, batch)

    save_model(model, word_tokenizer(), tmp_path)
    reloaded, tokenizer = load_model(tmp_path)

    assert (
        json.loads((tmp_path / "config.json").read_text())["edgeloom_layer_widths"][0][
            "intermediate_size"
        ]
        == 32
    )
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    assert TransformerView(reloaded).widths() == view.widths()
    torch.testing.assert_close(output_of(reloaded, batch), expected)
    assert tokenizer("w1 w2")["input_ids"] == [1, 2]


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        load_model(tmp_path)


def test_incomplete_weights_are_refused_not_left_random(tmp_path):
    save_model(tiny_llama(layers=2), word_tokenizer(), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"no weights for \['model\.layers\.1\.mlp\.down_proj"):
        load_model(tmp_path)


@pytest.mark.parametrize("model_type", sorted(DECODER_TYPES - {"llama"}))
def test_other_llama_family_decoders_prune_and_reload(model_type, tmp_path):
    model = tiny_decoder(model_type)
    view = TransformerView(model)
    batch = {"input_ids": token_batch()["input_ids"]}
    torch.testing.assert_close(blockwise(model, batch), output_of(model, batch))
    keep_head_groups(view.attention(view.layers[0]), torch.tensor([0]))  # Qwen2: q/k/v biases
    keep_mlp_neurons(view.mlp(view.layers[1]), torch.arange(40))
    drop_layers(view, [2])
    expected = output_of(model, batch)
    save_model(model, word_tokenizer(), tmp_path)
    reloaded, _ = load_model(tmp_path)
    assert type(reloaded).__name__ == type(model).__name__
    torch.testing.assert_close(output_of(reloaded, batch), expected)
