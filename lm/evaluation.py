"""Answering a split with a trained workdir and scoring it: BLEU (sacrebleu) and ROUGE-1/2/L
(rouge-score), the measures of translation and summarisation, and exact match. A seq2seq run
decodes its inputs; an sft run (a decoder fine-tuned on prompt -> response) answers its prompts
through its chat template; both are scored here, the same way.

Scores are corpus BLEU (sacrebleu's defaults: 13a tokenisation, exact match; its signature
is reported so the figure is reproducible) and the mean ROUGE F1 over examples with
Porter stemming, both on a 0-100 scale. With several references per example (DialogSum's
test split) BLEU counts matches against all of them and ROUGE takes the best one per example.
The lead baseline (the first sentences of the input) is scored the same way, over the same
examples.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from lm import decoding
from lm import pretrained as pretrained_lib
from lm import workdir as workdir_lib
from lm.config import ConfigError
from lm.data import corpus as corpus_lib
from lm.data import seq2seq as seq2seq_data

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def scores(predictions: list[str], references: list[str] | list[Sequence[str]]) -> dict:
    """{"bleu", "bleu_signature", "rouge1", "rouge2", "rougeL", "exact_match"}, on a 0-100 scale. `references`
    holds one string per prediction, or one sequence of strings each (the same number for all):
    BLEU counts n-gram matches against all of them, ROUGE takes the best-matching one.
    Also BLEU's parts: "bleu_precisions" (1- to 4-gram, 0-100), "bleu_brevity_penalty" (0-1)
    and "length_ratio" (predicted tokens / sacrebleu's reference length). Two models with the
    same precisions can differ in BLEU by length alone (docs/t5.md): the parts say which."""
    import sacrebleu  # noqa: PLC0415 (metrics libraries load only when scoring)
    from rouge_score import rouge_scorer  # noqa: PLC0415

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need as many predictions as references (got {len(predictions)} and {len(references)})")
    per_example = [(ref,) if isinstance(ref, str) else tuple(ref) for ref in references]
    if len({len(refs) for refs in per_example}) != 1:
        raise ValueError("every prediction needs the same number of references")
    bleu = sacrebleu.metrics.BLEU()
    streams = [list(stream) for stream in zip(*per_example)]  # sacrebleu: one list per reference position
    corpus = bleu.corpus_score(predictions, streams)
    result = {"bleu": corpus.score, "bleu_signature": str(bleu.get_signature()),
              "bleu_precisions": [float(p) for p in corpus.precisions], "bleu_brevity_penalty": float(corpus.bp),
              "length_ratio": corpus.sys_len / corpus.ref_len}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rouge = [scorer.score_multi(list(refs), pred) for pred, refs in zip(predictions, per_example)]
    for name in ROUGE_TYPES:
        result[name] = 100.0 * float(np.mean([s[name].fmeasure for s in rouge]))
    # Label words decoded (T5's text-to-text classification): the accuracy.
    result["exact_match"] = 100.0 * float(np.mean([pred.strip() in {r.strip() for r in refs}
                                                   for pred, refs in zip(predictions, per_example)]))
    return result


def lead(text: str, sentences: int = 2) -> str:
    """The first `sentences` sentences (or lines: a dialogue turn is one) of `text`."""
    return " ".join([s.strip() for s in _SENTENCE_END.split(text) if s.strip()][:sentences])


@dataclasses.dataclass
class Result:
    metrics: dict
    inputs: list[str]
    predictions: list[str]
    references: list  # a string per example, or a list of them (several references)


def evaluate_workdir(workdir: str, split: str = "validation", beam_size: int = 0, length_penalty: float = -1.0,
                     max_examples: int = 0, batch_size: int = 32, step: str | int = "best", lead_sentences: int = 0,
                     max_new_tokens: int = 0, log=print) -> Result:
    """Answers `split` with the workdir's checkpoint `step` (best, latest or a step number) and
    scores it. A seq2seq run decodes its inputs (beam_size 0 / length_penalty < 0: the run's
    seq2seq settings); an sft run answers its prompts greedily through its chat template, up
    to max_new_tokens (0: 128). lead_sentences > 0 also scores the lead baseline
    ("baseline_lead/<metric>") on the same examples."""
    if split not in seq2seq_data.SPLITS:
        raise ConfigError(f"--split={split!r}: choose one of {', '.join(seq2seq_data.SPLITS)}")
    config = workdir_lib.read_config(workdir)
    if config.train.objective not in ("seq2seq", "sft"):
        raise ConfigError(f"{workdir} was trained for {config.train.objective!r}; tools/evaluate.py decodes "
                          f"seq2seq (text-to-text) and sft (prompt -> response) runs: fine-tune one first "
                          f"(configs/finetune_multi30k.py, configs/finetune_dialogsum_sft.py)")
    run = pretrained_lib.load(workdir, step)
    answer = _seq2seq if config.train.objective == "seq2seq" else _sft
    examples, texts, predict = answer(config, split, run, beam_size, length_penalty, max_new_tokens, batch_size)
    if max_examples:
        examples, texts = examples[:max_examples], texts[:max_examples]
    references = [example[1] if len(example) == 2 else list(example[1:]) for example in examples]
    log(f"answering {len(examples)} {split} examples with step {run.step} of {workdir}")
    predictions, settings = predict([example[0] for example in examples])
    metrics = {**scores(predictions, references), "split": split, "step": run.step, "examples": len(examples),
               "references_per_example": len(examples[0]) - 1, **settings}
    if lead_sentences:
        baseline = [lead(text, lead_sentences) for text in texts]
        metrics.update({f"baseline_lead/{k}": v for k, v in scores(baseline, references).items()
                        if k != "bleu_signature"})
        metrics["baseline_lead/sentences"] = lead_sentences
    return Result(metrics, [example[0] for example in examples], predictions, references)


def _seq2seq(config, split, run, beam_size, length_penalty, max_new_tokens, batch_size):
    """(examples, the texts the lead baseline reads, predict) of a seq2seq run."""
    del max_new_tokens  # the run's seq2seq.target_len bounds a decoded target
    s2s = config.seq2seq
    decode_config = decoding.DecodeConfig(max_len=s2s.target_len, beam_size=beam_size or s2s.beam_size,
                                          length_penalty=s2s.length_penalty if length_penalty < 0 else length_penalty)
    examples = seq2seq_data.read_examples(config, split)

    def predict(inputs):
        predictions = decoding.decode_texts(run.model, run.params, run.tokenizer, inputs, decode_config,
                                            input_len=s2s.input_len, batch_size=min(batch_size, len(inputs)))
        return predictions, {"beam_size": decode_config.beam_size, "length_penalty": decode_config.length_penalty}
    return examples, [example[0][len(s2s.input_prefix):] for example in examples], predict


def _sft(config, split, run, beam_size, length_penalty, max_new_tokens, batch_size):
    """(examples, the texts the lead baseline reads, predict) of an sft run: greedy answers only."""
    from lm.data import sft as sft_data  # noqa: PLC0415
    from lm.tasks import sft  # noqa: PLC0415

    if beam_size > 1 or length_penalty >= 0:
        raise ConfigError("--beam_size and --length_penalty are seq2seq settings: an sft run is answered greedily")
    examples = sft_data.read_examples(config.finetune, split, corpus_lib.data_dir(config.data))
    template = sft_data.ChatTemplate.from_config(config.finetune)
    limit = max_new_tokens or 128

    def predict(prompts):
        answers = sft.respond(run.model, run.params, run.tokenizer, template, prompts, limit, batch_size)
        return [a.strip() for a in answers], {"decoding": "greedy", "max_new_tokens": limit}
    return examples, [example[0] for example in examples], predict
