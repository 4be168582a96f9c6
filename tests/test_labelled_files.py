"""The user's labelled files for classification: CSV, TSV and JSONL, text pairs, label names."""

import json

import numpy as np
import pytest

from lm.config import ConfigError
from lm.data import labelled_files

pytestmark = pytest.mark.finetune


def test_reads_csv_tsv_and_jsonl_with_the_same_result(tmp_path):
    rows = [("a fine film", "pos"), ("dull, \"very\" dull", "neg"), ("tab\tinside? no", "neutral"), ("ok", "pos")]
    with open(tmp_path / "train.csv", "w") as f:
        f.write("text,label\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}",{y}\n' for t, y in rows))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    (tmp_path / "train.tsv").write_text("label\ttext\n" + "".join(
        f"{y}\t{t.replace(chr(9), ' ')}\n" for t, y in rows))
    results = {}
    for suffix in ("csv", "jsonl", "tsv"):
        split, names = labelled_files.read_split(str(tmp_path / f"train.{suffix}"), "finetune.train_files",
                                                 ["text"], "label")
        assert names == ["neg", "neutral", "pos"] and split.second is None
        np.testing.assert_array_equal(split.labels, [2, 0, 1, 2])
        results[suffix] = split.first
    assert results["csv"] == results["jsonl"] == [t for t, _ in rows]
    assert results["tsv"][2] == "tab inside? no"


def test_pairs_numeric_labels_and_unknown_labels(tmp_path):
    def write(name, records):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    write("train.jsonl", [{"q": f"q{i}", "p": f"p{i}", "y": y} for i, y in enumerate([10, 2, 1, 2])])
    write("test.jsonl", [{"q": "x", "p": "y", "y": 3}])
    train, names = labelled_files.read_split(str(tmp_path / "train.jsonl"), "finetune.train_files", ["q", "p"], "y")
    assert names == ["1", "2", "10"]  # numeric order, so numeric labels keep their order
    assert train.second == ["p0", "p1", "p2", "p3"]
    np.testing.assert_array_equal(train.labels, [2, 1, 0, 1])
    with pytest.raises(ConfigError, match="labels the training split does not have: \\['3'\\]"):
        labelled_files.read_split(str(tmp_path / "test.jsonl"), "finetune.test_files", ["q", "p"], "y", names)
    with pytest.raises(ConfigError, match="no field 'text'"):
        labelled_files.read_split(str(tmp_path / "train.jsonl"), "finetune.train_files", ["text"], "y")
    with pytest.raises(ConfigError, match="one text field or two"):
        labelled_files.read_split(str(tmp_path / "train.jsonl"), "finetune.train_files", ["q", "p", "y"], "y")
