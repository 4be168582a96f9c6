"""TF-IDF + logistic-regression baseline on a fine-tuning task's validation split.

  python tools/baseline_tfidf.py --config=configs/finetune_sst2.py [--output=runs/sst2_tfidf.json]

Reads the same train and validation splits as the fine-tuning run (lm/data/glue.py; a
sentence pair is joined with " [SEP] "), fits word 1-2-gram TF-IDF features and a
logistic regression on train, and prints (and optionally writes) accuracy, precision, recall
and F1 on validation. Needs scikit-learn (`pip install -e '.[dev]'`).
"""
import json

from absl import flags

from lm import cli
from lm.data import glue
from lm.tasks import classification

_CONFIG = cli.define_config_flag("configs/finetune_sst2.py")
_OUTPUT = flags.DEFINE_string("output", "", "Write the metrics here as JSON.")
_C = flags.DEFINE_float("c", 1.0, "Inverse regularisation strength of the logistic regression.")


def _texts(split: glue.LabelledSplit) -> list[str]:
    if split.second is None:
        return split.first
    return [f"{a} [SEP] {b}" for a, b in zip(split.first, split.second)]


def main(argv):
    del argv
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.metrics import confusion_matrix  # noqa: PLC0415

    config = cli.load(_CONFIG)
    train = glue.load(config.finetune, "train", config.data.allow_download)
    validation = glue.load(config.finetune, "validation", config.data.allow_download)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    features = vectorizer.fit_transform(_texts(train))
    model = LogisticRegression(C=_C.value, max_iter=2000).fit(features, train.labels)
    predicted = model.predict(vectorizer.transform(_texts(validation)))
    classes = list(range(glue.NUM_CLASSES[config.finetune.task]))
    scores = classification.metrics_from_confusion(confusion_matrix(validation.labels, predicted, labels=classes))
    report = {"task": config.finetune.task, "baseline": "tfidf(1-2 grams)+logistic_regression", "C": _C.value,
              "train_examples": len(train.labels), "validation_examples": len(validation.labels), **scores}
    print(json.dumps(report, indent=2))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    cli.run(main)
