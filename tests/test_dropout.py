"""nlpfw.dropout: the CPU's cheaper dropout mask is dropout (share, scale, gradient, seeding), the
trainer installs it, and bert.v1's attention uses it in training and plain SDPA otherwise."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from nlpfw import dropout as fast
from nlpfw_plugins import bert


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_mask_drops_the_share_p_and_scales_the_rest_to_keep_the_mean(p, dtype):
    torch.manual_seed(0)
    x = torch.rand(1_000_003, dtype=dtype) + 0.5  # an odd size: the last random word is cut
    y = fast.dropout(x, p)
    dropped = round(p * 65536)
    assert abs((y == 0).float().mean().item() - dropped / 65536) < 0.002
    kept = y != 0
    scale = torch.tensor(65536 / (65536 - dropped), dtype=dtype)  # the kept share, exactly
    torch.testing.assert_close(y[kept], x[kept] * scale, rtol=0, atol=0)


def test_the_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = fast.dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    expected = torch.where(y != 0, 65536 / (65536 - round(0.2 * 65536)), 0.0)
    torch.testing.assert_close(x.grad, expected)


def test_masks_follow_torchs_seed_and_eval_or_p_zero_leave_the_input_alone():
    x = torch.randn(1000)
    torch.manual_seed(5)
    a = fast.dropout(x, 0.1)
    torch.manual_seed(5)
    b = fast.dropout(x, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, fast.dropout(x, 0.1))
    assert fast.dropout(x, 0.1, training=False) is x and fast.dropout(x, 0.0) is x
    assert torch.equal(fast.dropout(x, 1.0), torch.zeros_like(x))


def test_use_fast_dropout_swaps_every_plain_dropout_and_keeps_p():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.25), nn.Sequential(nn.Dropout(0.5), nn.AlphaDropout(0.1)))
    assert fast.use_fast_dropout(model) == 2
    assert type(model[1]) is fast.Dropout and model[1].p == 0.25
    assert type(model[2][0]) is fast.Dropout and model[2][0].p == 0.5
    assert type(model[2][1]) is nn.AlphaDropout  # not a plain nn.Dropout: left alone
    assert fast.use_fast_dropout(model) == 0


def tiny_bert(attention_dropout: float) -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=attention_dropout,
    )  # fmt: skip
    model = transformers.BertModel(config, add_pooling_layer=False)
    model.set_attn_implementation(bert.ATTENTION)
    return model


def test_bert_attention_in_training_is_sdpa_with_the_cheaper_mask():
    torch.manual_seed(0)
    model = tiny_bert(1e-6)  # rounds to no dropout: the training path must equal SDPA's output
    fast.use_fast_dropout(model)
    ids = torch.randint(5, 100, (3, 9))
    attention = torch.ones(3, 9, dtype=torch.long)
    attention[1, 5:] = 0
    attention[2, 2:] = 0
    model.eval()
    reference = model(input_ids=ids, attention_mask=attention).last_hidden_state
    model.train()
    ours = model(input_ids=ids, attention_mask=attention).last_hidden_state
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)

    layer = model.encoder.layer[0].attention.self
    layer.dropout.p = 0.5
    q, k, v = (torch.randn(3, 4, 9, 8) for _ in range(3))
    mask = attention.bool()[:, None, None, :].expand(3, 1, 9, 9)
    torch.manual_seed(7)
    out, _ = bert._attention(layer, q, k, v, mask, scaling=8**-0.5, dropout=0.5)
    scores = (q @ k.transpose(2, 3) * 8**-0.5).masked_fill(~mask, torch.finfo(torch.float32).min)
    torch.manual_seed(7)
    expected = (fast.dropout(scores.softmax(-1), 0.5) @ v).transpose(1, 2)
    torch.testing.assert_close(out, expected)
    # with torch's own dropout module (trainer.fast_dropout = false) SDPA draws the mask itself
    layer.dropout = nn.Dropout(0.5)
    torch.manual_seed(7)
    out, _ = bert._attention(layer, q, k, v, mask, scaling=8**-0.5, dropout=0.5)
    assert not torch.allclose(out, expected)


def test_a_saved_bert_config_does_not_name_nlpfws_attention(tmp_path):
    model = tiny_bert(0.1)
    assert model.config._attn_implementation == bert.ATTENTION
    model.config.save_pretrained(tmp_path)
    assert bert.ATTENTION not in (tmp_path / "config.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("on", [True, False])
def test_the_trainer_installs_it_on_the_cpu_unless_the_recipe_turns_it_off(on):
    from rich.console import Console

    from nlpfw.recipe import TrainerConfig
    from nlpfw.trainer import Trainer

    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    Trainer(model, None, TrainerConfig(fast_dropout=on), torch.device("cpu"), None, Console(quiet=True))
    assert (type(model[1]) is fast.Dropout) is on
