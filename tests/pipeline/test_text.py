"""Text through the CLI with human-labelled words: sentences of words from the VADER sentiment
lexicon (vaderSentiment's bundled file; every word rated by 10 people), labelled by the sign of
the sum of their ratings. The sentences are synthetic, the ratings are real: a model trained on
them in the test must give each word an attribution that follows its human rating."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from helpers import read_parquet_dir, vader_lexicon
from pipeline.cli import main

LENGTH = 10


def _sentences(rng, words, count):
    lengths = rng.integers(4, LENGTH + 1, size=count)
    return [" ".join(rng.choice(words, size=n)) for n in lengths]


def test_token_attributions_follow_the_human_ratings(tmp_path):
    import keras
    import tensorflow as tf

    lexicon = vader_lexicon()
    rng = np.random.default_rng(0)
    words = sorted(rng.choice(sorted(lexicon), size=200, replace=False).tolist())
    train = _sentences(rng, words, 6000)
    labels = np.array([sum(lexicon[w] for w in s.split()) > 0 for s in train], dtype=np.float32)

    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(output_sequence_length=LENGTH, name="vectorize", standardize=None)
    vectorize.adapt(words)
    text = keras.Input((1,), dtype="string", name="text")
    embedded = keras.layers.Embedding(len(vectorize.get_vocabulary()), 8, name="embedding")(vectorize(text))
    model = keras.Model(text, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(embedded)))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(tf.constant(np.array(train, dtype=object).reshape(-1, 1)), labels, epochs=8, batch_size=64, verbose=0)
    model.save(str(tmp_path / "sentiment.keras"))

    test = _sentences(rng, words, 600)
    pq.write_table(pa.table({"id": np.arange(600), "text": test}), str(tmp_path / "sentences.parquet"))
    code = main(["run", "--model", str(tmp_path / "sentiment.keras"), "--input", str(tmp_path / "sentences.parquet"),
                 "--output", str(tmp_path / "out"), "--key-column", "id", "--target", "0", "--layer-baseline", "id:0",
                 "--steps", "16", "--quiet"])
    assert code == 0
    rows = read_parquet_dir(tmp_path / "out").to_pylist()
    assert len(rows) == 600
    by_word: dict[str, list[float]] = {}
    for row in rows:
        for token, value in zip(row["tokens_text"], row["attr_text"]):
            if token == "":
                assert value == 0.0  # padding, against the padding baseline
            else:
                by_word.setdefault(token, []).append(value)
    assert set(by_word) <= set(words)
    seen = sorted(by_word)
    mean_attribution = np.array([np.mean(by_word[w]) for w in seen])
    ratings = np.array([lexicon[w] for w in seen])
    rho = spearmanr(mean_attribution, ratings).statistic
    assert rho > 0.8, rho
    strong = np.abs(ratings) >= 1.5
    agree = (np.sign(mean_attribution[strong]) == np.sign(ratings[strong])).mean()
    assert agree >= 0.95, agree

    # the dataset-level view in summary.json: the same means and counts, and the words that push
    # class 0 (the sentiment logit) up the most / least are rated positive / negative by people
    import json

    view = json.loads((tmp_path / "out" / "summary.json").read_text())["token_importance"]["text"]
    assert view["padding_id"] == 0 and view["positions"] == sum(len(v) for v in by_word.values())
    ranking = view["classes"]["0"]
    for entry in ranking["for"] + ranking["against"]:
        assert entry["count"] == len(by_word[entry["token"]])
        np.testing.assert_allclose(entry["mean"], np.mean(by_word[entry["token"]]), rtol=1e-5, atol=1e-9)
    assert all(lexicon[e["token"]] > 0 for e in ranking["for"])
    assert all(lexicon[e["token"]] < 0 for e in ranking["against"])
