"""Real data: the Palmer penguins (palmerpenguins' bundled CSV, offline). Species from island (ids
-> Embedding), sex (ids -> one-hot) and four measurements (floats), trained in the test, attributed
through the CLI at the embedding and the one-hot (found from the graph) and at the float input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helpers import read_parquet_dir, rows_by_key
from pipeline.demo import PENGUIN_MEASUREMENTS, penguins_table, train_penguins_model
from pipeline.cli import main


def test_penguins_completeness_against_the_model_itself(tmp_path):
    import keras

    table = penguins_table()
    model_path = train_penguins_model(tmp_path / "penguins.keras", table)
    pq.write_table(table, str(tmp_path / "penguins.parquet"))
    code = main(["run", "--model", model_path, "--input", str(tmp_path / "penguins.parquet"), "--output", str(tmp_path / "out"),
                 "--key-column", "id", "--inputs", "measurements=" + ",".join(PENGUIN_MEASUREMENTS), "--explain-logits",
                 "--layer-baseline", "id:0", "--steps", "32", "--quiet"])
    assert code == 0

    sex_missing = set(np.flatnonzero(table.column("sex").is_null().to_numpy(zero_copy_only=False)).tolist())
    assert len(sex_missing) == 11  # the CSV's NA sexes (its two rows without measurements among them)
    dead = read_parquet_dir(tmp_path / "out", "dead_letter").to_pylist()
    assert {int(d["key"]) for d in dead} == sex_missing and {d["error"] for d in dead} == {"column 'sex' is null"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["records_read"] == 344 and manifest["counts"]["records_attributed"] == 333
    assert [(c["input"], c["layer"]) for c in manifest["model"]["layers"]] == [("island", "island_embedding"), ("sex", "sex_one_hot")]

    # Independent truth from the model itself: its logits at each record and at the baseline,
    # which with id:0 is a plain record (island Biscoe, sex female, and by default the
    # measurements' medians over the sampled rows, which the manifest lists).
    assert manifest["baseline"]["per_input"] == {"island": "zeros", "sex": "zeros", "measurements": "median"}
    complete = table.filter(pc.invert(table.column("sex").is_null()))
    expected_median = np.median(np.stack([complete.column(c).to_numpy() for c in PENGUIN_MEASUREMENTS], axis=1), axis=0)
    np.testing.assert_allclose(manifest["baseline"]["values"]["measurements"], expected_median, rtol=1e-6)
    model = keras.saving.load_model(model_path)
    model.layers[-1].activation = keras.activations.linear
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    keys = sorted(rows)
    columns = {c: table.column(c).to_numpy(zero_copy_only=False)[keys] for c in ("island", "sex", *PENGUIN_MEASUREMENTS)}
    island, sex = columns["island"].reshape(-1, 1).astype(np.int32), columns["sex"].reshape(-1, 1).astype(np.int32)
    measurements = np.stack([columns[c] for c in PENGUIN_MEASUREMENTS], axis=1).astype(np.float32)
    logits = model.predict([island, sex, measurements], verbose=0)  # (N, 3)
    at_median = np.float32(manifest["baseline"]["values"]["measurements"]).reshape(1, 4)
    baseline = model.predict([np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32), at_median], verbose=0)[0]
    for i, key in enumerate(keys):
        row = rows[key]
        target = row["target"]
        assert target == int(np.argmax(logits[i]))
        np.testing.assert_allclose(row["target_score"], logits[i, target], rtol=1e-5, atol=1e-5)
        total = row["attr_island"] + row["attr_sex"] + sum(row[f"attr_{c}"] for c in PENGUIN_MEASUREMENTS)
        change = logits[i, target] - baseline[target]
        assert abs(total - change) <= 1e-3 * max(1.0, abs(change)), (key, total, change)
    # the model is right on the (training) rows, and the categorical inputs carry attribution
    accuracy = np.mean([rows[k]["target"] == table.column("species")[k].as_py() for k in keys])
    assert accuracy > 0.95
    assert np.mean([abs(rows[k]["attr_island"]) for k in keys]) > 1e-3

    # summary.json's category view: per explained class, each island id's mean attribution and count,
    # against a brute-force pass over the written rows
    view = json.loads((tmp_path / "out" / "summary.json").read_text())["token_importance"]["island"]
    assert view["positions"] == 333 and view["padding_id"] is None
    # domain truth: Chinstraps (class 1) live only on Dream (island id 1); against the Biscoe
    # baseline, Dream is the island that argues most for Chinstrap
    assert view["classes"]["1"]["for"][0]["token"] == "1" and view["classes"]["1"]["for"][0]["mean"] > 0
    for cls, ranking in view["classes"].items():
        for entry in ranking["for"]:
            chosen = [rows[k]["attr_island"] for k in keys
                      if rows[k]["target"] == int(cls) and table.column("island")[k].as_py() == int(entry["token"])]
            assert entry["count"] == len(chosen)
            np.testing.assert_allclose(entry["mean"], np.mean(chosen), rtol=1e-5, atol=1e-9)


def test_penguin_species_and_island_names_replace_ids_in_the_summaries_report_and_rows(tmp_path):
    """--class-names and --vocabulary (issue 26 item 8): the Chinstrap class's strongest island
    reads 'Dream', not '1', in summary.json and the report; a vocabulary for a column that is not
    an id input is refused before anything is written."""
    from pipeline.demo import PENGUIN_ISLANDS, PENGUIN_SPECIES

    table = penguins_table()
    model_path = train_penguins_model(tmp_path / "penguins.keras", table)
    pq.write_table(table, str(tmp_path / "penguins.parquet"))
    (tmp_path / "islands.txt").write_text("\n".join(PENGUIN_ISLANDS) + "\n")
    args = ["run", "--model", model_path, "--input", str(tmp_path / "penguins.parquet"), "--key-column", "id",
            "--inputs", "measurements=" + ",".join(PENGUIN_MEASUREMENTS), "--explain-logits", "--layer-baseline", "id:0",
            "--steps", "16", "--class-names", ",".join(PENGUIN_SPECIES), "--quiet"]
    assert main(args + ["--output", str(tmp_path / "out"), "--vocabulary", f"island={tmp_path / 'islands.txt'}"]) == 0
    view = json.loads((tmp_path / "out" / "summary.json").read_text())["token_importance"]["island"]
    assert view["classes"]["1"]["for"][0]["token"] == "Dream"
    assert {e["token"] for r in view["classes"].values() for e in r["for"] + r["against"]} <= set(PENGUIN_ISLANDS)
    rows = read_parquet_dir(tmp_path / "out")
    assert set(rows.column("target_name").to_pylist()) == set(PENGUIN_SPECIES)
    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Chinstrap (class 1)" in page and "<td>Dream</td>" in page

    assert main(args + ["--output", str(tmp_path / "bad"), "--vocabulary", f"bill_length_mm={tmp_path / 'islands.txt'}"]) == 2
    assert not (tmp_path / "bad").exists()


def test_a_vector_input_beside_id_inputs_reads_the_other_numeric_columns_without_a_mapping(tmp_path):
    """The penguins model's island and sex inputs read their own columns, so the (4,) measurements
    input takes the four numeric columns left (key and species given their roles): no --inputs."""
    table = penguins_table()
    model_path = train_penguins_model(tmp_path / "penguins.keras", table)
    pq.write_table(table, str(tmp_path / "penguins.parquet"))
    assert main(["run", "--model", model_path, "--input", str(tmp_path / "penguins.parquet"), "--output", str(tmp_path / "out"),
                 "--key-column", "id", "--passthrough-columns", "species", "--steps", "8", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["mapping"]["measurements"] == list(PENGUIN_MEASUREMENTS)
