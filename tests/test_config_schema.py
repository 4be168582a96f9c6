"""The schema in lm/config.py is the one source of allowed values, family ownership, resume
guards and docs/config.md; these tests check that each consumer really reads it."""

import dataclasses
import json
import os
import re
from typing import ClassVar

import pytest

from lm import config as config_lib, config_docs, workdir as workdir_lib
from lm.config_fields import FAMILIES, schema_fields, setting

SPECS = list(schema_fields(config_lib.Config))
# A valid run of each family, to which one field at a time is added.
FAMILY_RUN = {
    "gpt": {"model": {"family": "gpt"}, "train": {"objective": "causal_lm"}},
    "bert": {"model": {"family": "bert"}, "train": {"objective": "mlm_nsp"}},
    "t5": {"model": {"family": "t5", "positions": "relative"}, "train": {"objective": "span_corruption"}},
}


def _with(values: dict, key: str, value) -> dict:
    section, field = key.split(".")
    return {**values, section: {**values.get(section, {}), field: value}}


def _another_value(spec):
    if spec.choices:
        return next(choice for choice in spec.choices if choice != spec.default)
    return not spec.default if isinstance(spec.default, bool) else spec.default + 2


@pytest.mark.parametrize("spec", [s for s in SPECS if s.choices], ids=lambda s: s.key)
def test_choices_declared_in_the_schema_are_the_ones_validated(spec):
    with pytest.raises(config_lib.ConfigError, match=f"config '{spec.key}' is 'bogus'; choose one of "
                                                     f"{', '.join(spec.choices)}$"):
        config_lib.from_config_dict(_with({}, spec.key, "bogus"))
    for value in spec.choices:  # each declared value gets past the choice check (other checks may still object)
        try:
            config_lib.from_config_dict(_with({}, spec.key, value))
        except config_lib.ConfigError as error:
            assert not str(error).startswith(f"config '{spec.key}' is"), error


def test_a_default_outside_its_choices_is_a_declaration_error():
    with pytest.raises(TypeError, match="not among the choices"):
        setting("c", "doc", choices=("a", "b"))


def test_family_fields_are_the_gpt_bert_and_t5_only_fields():
    owned = {family: {s.key for s in SPECS if s.family == family} for family in FAMILIES}
    assert owned == {
        "gpt": {"model.logit_softcap", "model.unet_skips"},
        "bert": {"model.type_vocab_size", "model.norm_position", "model.embedding_norm",
                 "model.nsp_head"},
        "t5": {"model.num_decoder_layers", "model.relative_buckets", "model.relative_max_distance", "model.init",
               "model.scale_decoder_outputs"},
    }


@pytest.mark.parametrize("spec", [s for s in SPECS if s.family], ids=lambda s: s.key)
def test_a_family_field_set_on_another_family_is_refused_naming_field_and_family(spec):
    value = _another_value(spec)
    config_lib.from_config_dict(_with(FAMILY_RUN[spec.family], spec.key, value))  # its own family takes it
    for family in FAMILIES:
        if family != spec.family:
            config_lib.from_config_dict(FAMILY_RUN[family])
            with pytest.raises(config_lib.ConfigError, match=rf"^{spec.key}={value!r}, .*{spec.family.upper()} "
                                                             rf"options.*model.family={family!r} needs the default"):
                config_lib.from_config_dict(_with(FAMILY_RUN[family], spec.key, value))


# The resume guard as lm/workdir.py wrote it before the schema carried it: the schema must agree
# on every field.
LEGACY_GUARDED = ("model.", "tokenizer.", "data.", "train.batch_size", "train.seed", "train.objective",
                  "seq2seq.input_", "seq2seq.target_", "seq2seq.noise_density", "seq2seq.mean_noise_span_length",
                  "mlm.", "finetune.task", "finetune.data_dir", "finetune.tfds_name", "distill.teacher_")
# Guarded fields added since (what the examples are: the user's files, fields, windows, template).
LEGACY_GUARDED += ("finetune.train_files", "finetune.validation_files", "finetune.test_files", "finetune.text_fields",
                   "finetune.label_field", "finetune.max_question_tokens", "finetune.doc_stride",
                   "finetune.chat_template", "finetune.max_prompt_tokens")
LEGACY_UNGUARDED = ("data.prefetch", "data.cache_dir", "data.tfds_data_dir", "data.allow_download",
                    "data.num_workers", "data.data_dir")  # where or how fast, not what


def test_guarded_keys_are_those_of_the_legacy_prefix_rule():
    legacy = {s.key for s in SPECS if s.key.startswith(LEGACY_GUARDED) and not s.key.startswith(LEGACY_UNGUARDED)}
    assert config_lib.guarded_keys() == legacy
    assert all(workdir_lib.is_guarded(s.key) == (s.key in legacy) for s in SPECS)
    # keys only an older workdir's config.json has: guarded as their section is
    assert workdir_lib.is_guarded("model.a_removed_field") and not workdir_lib.is_guarded("optimizer.a_removed_field")


def test_every_field_has_a_doc_and_a_guard_decision():
    assert all(s.doc for s in SPECS), [s.key for s in SPECS if not s.doc]
    for field in dataclasses.fields(config_lib.Config):  # each section decides for itself, not by inheritance
        section = type(field.default)
        if dataclasses.is_dataclass(field.default):
            assert isinstance(vars(section).get("guarded_on_resume"), bool), section.__name__

    @dataclasses.dataclass(frozen=True)
    class Undecided:  # no section default, and a field that says nothing
        decided: int = setting(0, "doc", guarded=True)
        undecided: int = setting(0, "doc")

    with pytest.raises(TypeError, match="undecided: say whether a resume may change it"):
        list(schema_fields(Undecided))

    @dataclasses.dataclass(frozen=True)
    class Decided(Undecided):
        guarded_on_resume: ClassVar[bool] = False

    assert [s.guarded for s in schema_fields(Decided)] == [True, False]


def test_resume_refuses_a_changed_guarded_field_and_lists_the_others(tmp_path):
    saved = config_lib.to_dict(config_lib.Config())
    (tmp_path / "config.json").write_text(json.dumps(saved))
    os.makedirs(tmp_path / "checkpoints" / "10")
    changed = config_lib.to_dict(config_lib.Config(
        model=config_lib.ModelConfig(pooling="mean"), optimizer=config_lib.OptimizerConfig(learning_rate=5e-4)))
    with pytest.raises(config_lib.ConfigError, match=r"model.pooling: 'cls' -> 'mean'"):
        workdir_lib.check_config(str(tmp_path), changed, b"", allow_change=False)
    logged = []
    workdir_lib.check_config(str(tmp_path), changed, b"", allow_change=True, log=logged.append)
    assert "model.pooling" in logged[0] and "optimizer.learning_rate" in logged[1]


def test_docs_config_md_is_generated_from_the_schema():
    with open(config_docs.PATH) as f:
        assert f.read() == config_docs.markdown_reference(), "docs/config.md is out of date: python -m lm.config_docs"
    rows = {}
    for line in config_docs.markdown_reference().splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert list(rows) == [s.key for s in SPECS]
    for spec in SPECS:
        key, default, allowed, family, guarded, doc = rows[spec.key]
        assert default == f"`{spec.default!r}`" and all(f"`{value}`" in allowed for value in spec.choices)
        assert (family, guarded == "yes", doc.replace("\\|", "|").replace("&lt;", "<")) == (
            spec.family, spec.guarded, spec.doc)
