"""Shared test set-up: one token/tokenizer cache per session, the shipped corpus, and small
configs that train in seconds on one CPU core."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# CI's copy of the datasets fills the data directory the shipped configs read (docs/data.md); a
# user's own LM_DATA_DIR wins. Set at import, so the subprocesses tests start inherit it.
if SHARED_DATA.exists():
    os.environ.setdefault("LM_DATA_DIR", str(SHARED_DATA))
CORPUS = REPO / "data" / "tinyshakespeare" / "input.txt"
# pytest.ini's `pythonpath = .` puts this checkout first for the test process; the same for the
# tools and runners tests start as subprocesses, whichever checkout the environment installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@pytest.hookimpl(optionalhook=True)  # declared by pytest-xdist; without it the suite runs serially
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (the README's test command): one worker per core this process may use, at most
    four (PYTEST_XDIST_AUTO_NUM_WORKERS still wins). Each worker is a whole JAX process with its
    own compile cache and session fixtures; the cap keeps a many-core machine from starting
    dozens of them."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 4))


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Tests never touch the user's ~/.cache/lm."""
    path = tmp_path_factory.mktemp("lm_cache")
    os.environ["LM_CACHE_DIR"] = str(path)
    from lm import cli
    cli.enable_compilation_cache()  # tests compile the same small programs many times
    yield path


def shared_data(name: str) -> Path:
    """A dataset from ../shared/data, or a skip with the reason (CI has it; a user's clone may not)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared data folder beside the repository")
    return path


def small_config(base: str = "gpt_tiny", **overrides):
    """configs/<base>.py (gpt_tiny) shrunk to train in seconds: dotted keys override, e.g.
    small_config(**{"train.steps": 5})."""
    import importlib

    from lm import config as config_lib

    defaults = {
        "model.num_layers": 2, "model.embed_dim": 64, "model.num_heads": 4, "model.mlp_dim": 256,
        "model.max_len": 64, "data.seq_len": 64, "tokenizer.vocab_size": 512, "train.batch_size": 8,
        "train.steps": 20, "train.log_every_steps": 5, "eval.every_steps": 10, "eval.max_batches": 2,
        "checkpoint.every_steps": 10, "optimizer.warmup_steps": 5, "train.sample_tokens": 8,
        "checkpoint.async_save": False,
    }
    return config_lib.from_config_dict(importlib.import_module(f"configs.{base}").get_config(),
                                       {**defaults, **overrides})


# The fault-injection suite (tests marked `faults`, tests/test_faults.py) ends the session with
# one line: how many of its scenarios were tried and how many passed.
_FAULT_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "faults" not in report.keywords:
        return
    if report.failed or report.skipped or report.when == "call":
        _FAULT_OUTCOMES.setdefault(report.nodeid, report.outcome if report.when == "call" else
                                   ("skipped" if report.skipped else "failed"))
        if report.failed:
            _FAULT_OUTCOMES[report.nodeid] = "failed"


def pytest_terminal_summary(terminalreporter):
    if not _FAULT_OUTCOMES:
        return
    outcomes = list(_FAULT_OUTCOMES.values())
    tried = len(outcomes) - outcomes.count("skipped")
    terminalreporter.write_line(f"faults: {tried} scenarios tried, {outcomes.count('passed')} passed"
                                + (f", {outcomes.count('skipped')} skipped" if "skipped" in outcomes else ""))


@pytest.fixture(scope="session")
def trained_tiny_workdir(tmp_path_factory):
    """A real workdir (orbax checkpoints, config.json, tokenizer.model) of a small GPT trained
    for 40 steps on tiny-shakespeare: shared by the generation, quantization and distillation tests."""
    from lm import trainer

    workdir = str(tmp_path_factory.mktemp("trained_tiny"))
    trainer.train(small_config(**{"train.steps": 40, "eval.every_steps": 40, "checkpoint.every_steps": 40,
                                  "optimizer.learning_rate": 3e-3}), workdir)
    return workdir


@pytest.fixture(scope="session")
def bert_pretrained_workdir(tmp_path_factory):
    """A real 30-step BERT MLM+NSP pretraining workdir on tiny-shakespeare (tests/bert_setup.py):
    shared by the pretraining and fine-tuning tests."""
    from bert_setup import bert_config
    from lm import trainer

    workdir = str(tmp_path_factory.mktemp("bert_pretrain"))
    trainer.train(bert_config(), workdir)
    return workdir
