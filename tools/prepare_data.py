"""Pre-process a corpus once into array_record shards (raw documents, or tokenized), with
several processes, resumable (a rerun writes only the missing shards), with a progress bar.

  python tools/prepare_data.py --files='/data/wiki/*.txt' --output=/data/wiki_records --processes=8
  python tools/prepare_data.py --tfds_name=wikipedia/20230601.en --allow_download \
      --output=/data/wiki_tokens --tokenizer=/data/wiki.model --num_shards=256

Train from the folder with --config.data.train_files=/data/wiki_records --config.data.streaming=true
(or as a mixture entry, name:/data/wiki_records:0.5). A tokenized folder needs the same
--config.tokenizer.path. docs/data.md has the details.
"""
import os

from absl import app, flags

from lm.data import corpus, prepare
from lm.data import tokenizer as tokenizer_lib

_FILES = flags.DEFINE_string("files", "", "Local text files or globs, comma separated (.gz read too).")
_TFDS_NAME = flags.DEFINE_string("tfds_name", "", "A tfds dataset, e.g. wikipedia/20230601.en.")
_SPLIT = flags.DEFINE_string("split", "train", "The tfds split.")
_TEXT_KEY = flags.DEFINE_string("text_key", "text", "The tfds feature holding the text.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "", "Empty: $TFDS_DATA_DIR or ~/tensorflow_datasets.")
_ALLOW_DOWNLOAD = flags.DEFINE_bool("allow_download", False, "Download and prepare the tfds dataset if needed.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the shards and prepare_data.json.", required=True)
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "A sentencepiece .model: write token ids instead of raw text.")
_PROCESSES = flags.DEFINE_integer("processes", 2, "Worker processes.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 64, "tfds: output shards (local files: one per file).")


def main(argv):
    del argv
    import tqdm  # noqa: PLC0415

    tokenizer = tokenizer_lib.Tokenizer.load(_TOKENIZER.value) if _TOKENIZER.value else None
    if bool(_FILES.value) == bool(_TFDS_NAME.value):
        raise app.UsageError("give exactly one of --files and --tfds_name")
    if _FILES.value:
        jobs = prepare.plan(_OUTPUT.value, files=corpus.expand_files(_FILES.value, "--files"), tokenizer=tokenizer)
    else:
        import tensorflow_datasets as tfds  # noqa: PLC0415

        builder = tfds.builder(_TFDS_NAME.value, data_dir=_TFDS_DATA_DIR.value or None, file_format="array_record")
        if _ALLOW_DOWNLOAD.value:
            builder.download_and_prepare()
        count = builder.info.splits[_SPLIT.value].num_examples
        tfds_args = (_TFDS_NAME.value, _SPLIT.value, _TFDS_DATA_DIR.value, _TEXT_KEY.value)
        jobs = prepare.plan(_OUTPUT.value, tfds=tfds_args, num_examples=count, num_shards=_NUM_SHARDS.value,
                            tokenizer=tokenizer)
    with tqdm.tqdm(total=len(jobs), unit="shard", desc="prepare_data") as bar:
        bar.update(sum(1 for job in jobs if os.path.exists(job.output)))
        manifest = prepare.run(jobs, _OUTPUT.value, _PROCESSES.value, tokenizer, progress=bar.update)
    print(f"wrote {len(manifest['shards'])} {manifest['kind']} shards to {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
