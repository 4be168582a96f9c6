"""Supervised fine-tuning of a decoder (train.objective=sft): prompt -> response, the loss on the
response tokens only, examples packed without seeing each other (lm/data/sft.py).

Data: JSON lines (finetune.train_files / validation_files) with the prompt in
finetune.text_fields and the response in finetune.label_field. The chat template
(finetune.chat_template) is part of the run's config, so the workdir keeps it and
`tools/generate.py --chat` shows a prompt the way training did. init_from takes every parameter
of a causal-LM run (and its tokenizer). Evaluation: the response tokens' loss, perplexity and
accuracy under teacher forcing; the end-of-run sample answers two validation prompts greedily.
"""

from __future__ import annotations

import dataclasses

from lm.config import ConfigError
from lm.data import batching
from lm.data import corpus as corpus_lib
from lm.data import sft as sft_data
from lm.tasks import base, labelled
from lm.tasks.causal_lm import CausalLM


@dataclasses.dataclass
class SftData:
    tokenizer: object
    template: sft_data.ChatTemplate
    train: sft_data.SftExamples
    validation: sft_data.SftExamples


class Sft(CausalLM):
    """Causal-LM cross-entropy on the rows' weights, which cover the responses only."""


class SftPipeline(base.Pipeline):
    reads_data_files = False  # finetune.*_files

    def prepare(self) -> SftData:
        c, f = self.config, self.config.finetune
        labelled.require_files(c, "sft")
        root = corpus_lib.data_dir(self.config.data)  # relative files: also in the data directory
        train, validation = (sft_data.read_examples(f, split, root) for split in ("train", "validation"))
        template = sft_data.ChatTemplate.from_config(f)
        tokenizer = labelled.tokenizer_for(c, [t for pair in train for t in (template.render(pair[0]), pair[1])],
                                           "sft")
        encode = lambda pairs: sft_data.encode(pairs, tokenizer, template, c.data.seq_len)  # noqa: E731
        return SftData(tokenizer, template, encode(train), encode(validation))

    def train_iterator(self, data: SftData, process_index: int = 0, process_count: int = 1):
        c, tok = self.config, data.tokenizer
        rows = sft_data.train_rows(data.train, c.data.seq_len, tok.pad_id, tok.byte_lengths, c.data.seed)
        return iter(batching.batched(rows, c.train.batch_size, process_index, process_count, seed=c.data.seed,
                                     prefetch=c.data.prefetch))

    def eval_batches(self, data: SftData, process_index: int = 0, process_count: int = 1):
        c, tok = self.config, data.tokenizer
        rows = sft_data.eval_rows(data.validation, c.data.seq_len, tok.pad_id, tok.byte_lengths, self.eval_batch_size,
                                  c.eval.max_batches)
        return batching.eval_pass(rows, len(rows), self.eval_batch_size, c.eval.max_batches, process_index,
                                  process_count)

    def sample(self, model, params, data: SftData) -> str:
        pairs = data.validation.texts[:2]
        try:
            answers = respond(model, params, data.tokenizer, data.template, [p for p, _ in pairs],
                              self.config.train.sample_tokens)
        except ConfigError:
            return "[no sample: the prompts fill model.max_len]"
        return "\n\n".join(f"prompt:     {p}\nreference:  {r}\nresponse:   {a}" for (p, r), a in zip(pairs, answers))


def respond(model, params, tokenizer, template: sft_data.ChatTemplate, prompts: list[str], max_new_tokens: int,
            batch_size: int = 32) -> list[str]:
    """Greedy responses to `prompts`, shown as training showed them (template.show), up to
    max_new_tokens each (fewer where a learned position table has less room). Batches hold
    prompts of similar length: each batch width compiles once."""
    from lm import generate, sampling  # noqa: PLC0415

    shown = [template.show(p, tokenizer) for p in prompts]
    lengths = [1 + len(tokenizer.encode(text)) for text in shown]  # generate_text puts EOS first
    order = sorted(range(len(shown)), key=lambda i: -lengths[i])
    answers = [""] * len(shown)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        room = max_new_tokens
        if model.config.positions == "learned":
            room = min(room, model.config.max_len - lengths[batch[0]])
        if room < 1:
            raise ConfigError(f"a prompt of {lengths[batch[0]]} tokens fills model.max_len={model.config.max_len}: "
                              f"set finetune.max_prompt_tokens to leave room for the response")
        gen = generate.GenerationConfig(max_new_tokens=room, sampler=sampling.Sampler(0.0))
        for index, text in zip(batch, generate.generate_text(model, params, tokenizer, [shown[i] for i in batch], gen)):
            answers[index] = text
    return answers
