"""The classical baseline for the sentiment corpus: TF-IDF over character 1-3-grams with
logistic regression (scikit-learn), its C chosen on dev, scored once on test.

    python benchmarks/textcat_baseline.py            # needs pip install -e ".[bench]" (scikit-learn)

Prints the CPU class, dev accuracy for each C, and test accuracy and macro-F1 of the chosen one,
so a from-scratch recipe's test accuracy (`nlpfw evaluate RUN --split test`) can be put beside
it. Reads the corpus through `sentiment.v1`, exactly the texts and labels a recipe trains on.
"""

from __future__ import annotations

import argparse
import time

from _common import data_root, header

from nlpfw_plugins.text_labels import Sentiment, SentimentConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0], help="values of C to try on dev")
    args = parser.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    dataset = Sentiment(SentimentConfig(), data_root())
    splits = {name: dataset.load(name) for name in ("train", "dev", "test")}
    texts = {name: [e.text for e in examples] for name, examples in splits.items()}
    gold = {name: [e.gold[0] for e in examples] for name, examples in splits.items()}
    header("TF-IDF character 1-3-grams + logistic regression on sentiment.v1")
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    features = {"train": vectorizer.fit_transform(texts["train"])}
    features.update({name: vectorizer.transform(texts[name]) for name in ("dev", "test")})
    best = None
    for c in args.c:
        model = LogisticRegression(C=c, max_iter=2000).fit(features["train"], gold["train"])
        accuracy = accuracy_score(gold["dev"], model.predict(features["dev"]))
        print(f"C={c:g}: dev accuracy {accuracy:.4f}")
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    assert best is not None
    predicted = best[2].predict(features["test"])
    print(
        f"chosen C={best[1]:g} on dev: test accuracy {accuracy_score(gold['test'], predicted):.4f}, "
        f"test macro-F1 {f1_score(gold['test'], predicted, average='macro'):.4f} "
        f"({len(texts['test']):,} texts; {time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
