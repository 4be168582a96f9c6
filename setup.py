"""Installs `lm`: a JAX/Flax codebase for pretraining language models.

Ranges are pinned to the minor versions verified to install and work together
(jax, flax, optax and orbax change their APIs between minor releases).
"""
import setuptools

CORE = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<4.10",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8.6,<0.9",
    "sentencepiece>=0.2.3,<0.3",
    "ml-collections>=1.1,<1.2",
    "tensorboardX>=2.6.5,<2.7",
    "absl-py>=2.1,<3",
    "numpy>=2.0,<3",
    "tqdm>=4.66,<5",
    "matplotlib>=3.8,<4",  # Curves people look at: tools/plot.py, sweep reports.
    "sacrebleu>=2.4,<3",  # BLEU with its signature.
    "rouge-score>=0.1.2,<0.2",  # ROUGE-1/2/L; works offline.
    "importlib_resources>=6",  # tensorflow-datasets imports it without declaring it.
]

EXTRAS = {
    "dev": [
        "pytest>=9,<10",
        "pytest-xdist>=3.5,<4",  # the README's test command runs the suite on every core (-n auto)
        "portpicker>=1.6,<2",
        "tensorboard>=2.21,<2.22",  # tests read our event files back with TensorBoard's own reader
        "scikit-learn>=1.5,<2",  # BERT fine-tuning metrics are checked against it; tools/baseline_tfidf.py.
        "seqeval>=1.2.2,<1.3",  # entity-level F1 (lm/tagging.py) is checked against it
        "wandb>=0.31,<0.32",  # tests/test_tracking.py writes an offline W&B run and reads it back
        "gcsfs>=2026.10,<2026.11",  # tests/test_storage.py: a gs:// workdir (the gcs extra)
        "gcp-storage-emulator>=2026.7.19,<2026.8",  # tests/test_storage.py: a local GCS server, pure Python
    ],
    # Runs on Google Cloud Storage: --workdir=gs://..., data.train_files=gs://... (docs/storage.md).
    # etils.epath reaches gs:// through gcsfs (orbax's arrays go through tensorstore, built in).
    "gcs": [
        "gcsfs>=2026.10,<2026.11",
    ],
    # Experiment tracking: logging.wandb=true mirrors the metrics and config to Weights & Biases.
    "tracking": [
        "wandb>=0.31,<0.32",
    ],
    # Hugging Face interop and the PyTorch peer benchmark. torch is pinned exactly: a range
    # pulls the multi-GB CUDA build instead of the CPU wheel.
    "hf": [
        "tokenizers>=0.23,<0.24",  # Hugging Face tokenizer.json (lm/data/hf_tokenizer.py)
        "torch==2.13.0",
        "transformers>=5.23,<6",
        "safetensors>=0.8,<0.9",
    ],
}

setuptools.setup(
    name="lm",
    version="0.1.0",
    description="Pretrain language models with JAX and Flax, from a laptop CPU to TPU pods.",
    python_requires=">=3.10",
    # configs/ and experiments/ are imported by config files and tools; diagnostics/ holds the
    # benchmarks, probes and peer training loops beside the library. Installing them lets every
    # tool import them without editing sys.path.
    packages=setuptools.find_packages(include=["lm", "lm.*", "configs", "experiments",
                                               "diagnostics", "diagnostics.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
