"""Decoding a seq2seq split with a trained workdir and scoring it: BLEU (sacrebleu) and
ROUGE-1/2/L (rouge-score), the measures of translation and summarisation.

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
                     log=print) -> Result:
    """Decodes `split` with the workdir's checkpoint `step` (best, latest or a step number) and scores it.
    beam_size 0 / length_penalty < 0: the run's seq2seq settings. lead_sentences > 0 also
    scores the lead baseline ("baseline_lead/<metric>")."""
    if split not in seq2seq_data.SPLITS:
        raise ConfigError(f"--split={split!r}: choose one of {', '.join(seq2seq_data.SPLITS)}")
    config = workdir_lib.read_config(workdir)
    if config.train.objective != "seq2seq":
        raise ConfigError(f"{workdir} was trained for {config.train.objective!r}; tools/evaluate.py decodes "
                          f"seq2seq (text-to-text) runs: fine-tune one first (configs/finetune_multi30k.py)")
    run = pretrained_lib.load(workdir, step)
    s2s = config.seq2seq
    decode_config = decoding.DecodeConfig(max_len=s2s.target_len, beam_size=beam_size or s2s.beam_size,
                                          length_penalty=s2s.length_penalty if length_penalty < 0 else length_penalty)
    pairs = seq2seq_data.read_examples(config, split)
    if max_examples:
        pairs = pairs[:max_examples]
    inputs = [example[0] for example in pairs]
    references = [example[1] if len(example) == 2 else list(example[1:]) for example in pairs]
    log(f"decoding {len(pairs)} {split} examples with step {run.step} of {workdir} "
        f"(beam {decode_config.beam_size}, length penalty {decode_config.length_penalty})")
    predictions = decoding.decode_texts(run.model, run.params, run.tokenizer, inputs, decode_config,
                                        input_len=s2s.input_len, batch_size=min(batch_size, len(inputs)))
    metrics = {**scores(predictions, references), "split": split, "step": run.step, "examples": len(pairs),
               "references_per_example": len(pairs[0]) - 1,
               "beam_size": decode_config.beam_size, "length_penalty": decode_config.length_penalty}
    if lead_sentences:
        baseline = [lead(text[len(s2s.input_prefix):], lead_sentences) for text in inputs]
        metrics.update({f"baseline_lead/{k}": v for k, v in scores(baseline, references).items()
                        if k != "bleu_signature"})
        metrics["baseline_lead/sentences"] = lead_sentences
    return Result(metrics, inputs, predictions, references)
