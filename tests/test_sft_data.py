"""SFT data: chat template, loss weights on responses only, packing without cross-contamination."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CORPUS
from lm import config as config_lib
from lm import models
from lm.config import ConfigError, TokenizerConfig
from lm.data import sft
from lm.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.finetune
PAIRS = [("Summarise: the cat sat on the mat.", "A cat sat."), ("Say hello.", "Hello there, friend!"),
         ("Count to three.", "One, two, three."), ("Name a colour.", "Blue.")]


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_lib.train([CORPUS.read_text()[:200_000]], TokenizerConfig(vocab_size=400))


def test_template_renders_and_refuses_a_format_without_the_prompt():
    template = sft.ChatTemplate("User: {prompt}\nAssistant: ")
    assert template.render("hi") == "User: hi\nAssistant: "
    with pytest.raises(ConfigError, match="exactly once"):
        sft.ChatTemplate("no placeholder")


def test_a_long_prompt_keeps_its_start_and_the_template_its_cue(tokenizer):
    template = sft.ChatTemplate("Summarise:\n{prompt}\nSummary:", max_prompt_tokens=5)
    prompt = "the king is dead and the queen will speak to the people tomorrow"
    ids = tokenizer.encode(prompt)
    assert len(ids) > 5
    assert template.show(prompt, tokenizer) == template.render(tokenizer.decode(ids[:5]))
    assert template.show("the king", tokenizer) == template.render("the king")  # short: as it is
    assert sft.ChatTemplate("{prompt}").show(prompt, tokenizer) == prompt  # 0: never cut
    examples = sft.encode([(prompt, "ok")], tokenizer, template, seq_len=64)  # training shows it the same way
    assert examples.tokens[0][1:examples.prompt_lengths[0]].tolist() == tokenizer.encode(template.show(prompt, tokenizer))


def test_loss_weights_cover_exactly_the_responses(tokenizer):
    template = sft.ChatTemplate()
    examples = sft.encode(PAIRS, tokenizer, template, seq_len=128)
    rows = sft.train_rows(examples, 128, tokenizer.pad_id, tokenizer.byte_lengths, seed=0)
    seen = []
    for index in range(len(rows)):
        row = rows[index]
        for segment in range(1, row["segment_ids"].max() + 1):
            where = row["segment_ids"] == segment
            weighted = row["targets"][where & (row["weights"] > 0)]
            assert weighted[-1] == tokenizer.eos_id
            seen.append(tokenizer.decode(weighted[:-1]))
            # Inputs of the segment are EOS + rendered prompt + response; the prompt is never a target.
            inputs = row["inputs"][where]
            assert inputs[0] == tokenizer.eos_id
            assert tokenizer.decode(inputs[1:]) in {template.render(p) + r for p, r in PAIRS}
            np.testing.assert_array_equal(row["positions"][where], np.arange(where.sum()))
        assert row["weights"][row["segment_ids"] == 0].sum() == 0
        assert (row["target_bytes"] > 0).sum() <= (row["weights"] > 0).sum()
    assert sorted(seen) == sorted(response for _, response in PAIRS)
    assert len(rows) < len(PAIRS)  # several examples share a row


def test_long_examples_are_truncated_or_dropped(tokenizer):
    long_prompt, long_response = "word " * 100, "answer " * 100
    examples = sft.encode([(long_prompt, "ok"), ("short", long_response), ("hi", "yo")], tokenizer,
                          sft.ChatTemplate("{prompt}"), seq_len=32)
    assert examples.dropped == 1 and examples.truncated == 1 and len(examples.tokens) == 2
    assert max(len(t) for t in examples.tokens) == 33
    row = sft.pack_row(examples, [0], 32, tokenizer.pad_id, tokenizer.byte_lengths)
    assert row["weights"].sum() == 32 - (examples.prompt_lengths[0] - 1)


def test_packed_examples_train_as_they_would_alone(tokenizer):
    """Per-token losses of a packed row equal those of each example in its own row: attention
    never crosses examples, positions restart."""
    cfg = config_lib.ModelConfig(vocab_size=tokenizer.vocab_size, num_layers=2, embed_dim=32, num_heads=4,
                                 mlp_dim=64, max_len=128)
    model = models.build(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 128), jnp.int32))["params"])
    examples = sft.encode(PAIRS, tokenizer, sft.ChatTemplate(), seq_len=128)

    def losses(row):
        logits = model.apply({"params": params}, row["inputs"][None], row["positions"][None],
                             row["segment_ids"][None])[0]
        nll = -jax.nn.log_softmax(logits)[np.arange(128), row["targets"]]
        return np.asarray(nll) * row["weights"]

    packed = sft.pack_row(examples, [0, 1], 128, tokenizer.pad_id, tokenizer.byte_lengths)
    alone = [sft.pack_row(examples, [i], 128, tokenizer.pad_id, tokenizer.byte_lengths) for i in (0, 1)]
    first = len(examples.tokens[0]) - 1
    packed_losses = losses(packed)
    np.testing.assert_allclose(packed_losses[:first], losses(alone[0])[:first], atol=1e-5)
    second = len(examples.tokens[1]) - 1
    np.testing.assert_allclose(packed_losses[first:first + second], losses(alone[1])[:second], atol=1e-5)
