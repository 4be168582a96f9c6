"""Continue text with a trained model (cached, compiled decoding; see lm/generate.py).

  python tools/generate.py --workdir=runs/gpt_tiny --prompt="ROMEO:" --max_new_tokens=200 \
      --temperature=0.8 --top_k=40 --top_p=0.95

The prompt and its continuation go to stdout, the continuation streamed as it is decoded;
progress goes to stderr.
--prompts_file=FILE (one prompt a line; "\\n" inside a line is a newline) decodes them as one
batch and prints each continuation after a "### prompt N" line. --temperature=0 is greedy.
--chat (a workdir fine-tuned with train.objective=sft) renders each prompt with the run's chat
template, as training did, and prints the response.
"""
import sys
import time

from absl import flags

from lm import cli, generate, pretrained, sampling
from lm.config import ConfigError
from lm.data import sft

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by tools/train.py (or tools/convert.py).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Instead of --workdir: a workdir or one of its checkpoints, "
                                  "WORKDIR/checkpoints/STEP.")
_PROMPT = flags.DEFINE_string("prompt", "", "The text to continue.")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", "", "A file of prompts, one a line, decoded as one batch.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 100, "New tokens per prompt at most.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0: all.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Sample among the most likely tokens holding this mass; 1: all.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed for sampling.")
_STOP = flags.DEFINE_list("stop", [], "Extra stop pieces (tokenizer pieces, e.g. '\\n'); EOS always stops.")
_STEP = cli.define_step_flag()
_STREAM = flags.DEFINE_bool("stream", True, "Print a single prompt's tokens as they come.")
_STREAM_EVERY = flags.DEFINE_integer("stream_every", 4, "Tokens per streamed chunk.")
_CHAT = flags.DEFINE_bool("chat", False, "Show each prompt through the workdir's chat template (an sft run's "
                          "finetune.chat_template) and print the response.")
_UNCACHED = flags.DEFINE_bool("uncached", False, "Recompute the whole prefix per token (slow reference).")


def _prompts() -> list[str]:
    if _PROMPTS_FILE.value:
        try:
            with open(_PROMPTS_FILE.value) as f:
                prompts = [line.rstrip("\n").replace("\\n", "\n") for line in f if line.strip()]
        except OSError as error:
            raise ConfigError(f"--prompts_file={_PROMPTS_FILE.value} cannot be read ({error.strerror}): give a text "
                              f"file with one prompt a line") from None
        if not prompts:
            raise ConfigError(f"--prompts_file={_PROMPTS_FILE.value} has no non-empty line")
        return prompts
    if not _PROMPT.value:
        raise ConfigError("give --prompt=TEXT or --prompts_file=FILE")
    return [_PROMPT.value.replace("\\n", "\n")]


def main(argv):
    del argv
    prompts = _prompts()
    if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
        raise ConfigError("give exactly one of --workdir=DIR and --checkpoint=DIR[/checkpoints/STEP]")
    loaded = pretrained.load(_WORKDIR.value or _CHECKPOINT.value, _STEP.value)
    tokenizer = loaded.tokenizer
    if _CHAT.value:
        template = sft.ChatTemplate.from_config(loaded.config.finetune)
        prompts = [template.show(p, tokenizer) for p in prompts]
    stop_ids = (tokenizer.eos_id,) + tuple(tokenizer.piece_id(p.replace("\\n", "\n")) for p in _STOP.value)
    gen = generate.GenerationConfig(
        max_new_tokens=_MAX_NEW.value, seed=_SEED.value, stop_ids=stop_ids, cached=not _UNCACHED.value,
        sampler=sampling.Sampler(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value))
    print(f"{loaded.workdir} step {loaded.step}: {len(prompts)} prompt(s)", file=sys.stderr)
    stream = len(prompts) == 1 and _STREAM.value
    write = lambda text: (sys.stdout.write(text), sys.stdout.flush())  # noqa: E731
    started = time.time()
    # A continuation is shown after its prompt; a chat answer alone (the template is not what was typed).
    shown = [""] * len(prompts) if _CHAT.value else prompts
    if stream:
        write(shown[0])  # the continuation follows it, as it is decoded
    texts = generate.generate_text(loaded.model, loaded.params, tokenizer, prompts, gen,
                                   stream=write if stream else None, stream_every=_STREAM_EVERY.value)
    elapsed = time.time() - started
    if stream:
        print()
    else:
        for i, (prompt, text) in enumerate(zip(shown, texts)):
            print(f"### prompt {i}" if len(texts) > 1 else "", end="\n" if len(texts) > 1 else "")
            print(prompt + text)
    new_tokens = sum(len(tokenizer.encode(t)) for t in texts)
    print(f"{new_tokens} tokens in {elapsed:.1f}s, compile included", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
