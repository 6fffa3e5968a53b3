"""--class-names (issue 26 item 8): names written beside each row's target, kept in the manifest
and summary.json, and used by the report and compare; a wrong count or a missing file is refused
on the launcher."""

import json

import numpy as np
import pyarrow.parquet as pq

from pipeline.cli import main
from tests.helpers import read_parquet_dir

NAMES = ["setosa", "versicolor", "virginica"]


def test_class_names_reach_the_rows_the_summaries_the_report_and_compare(linear_model, tabular_data, tmp_path, capsys):
    model, data = linear_model[0], tabular_data[0]
    names_file = tmp_path / "classes.txt"
    names_file.write_text("\n".join(NAMES) + "\n\n")
    for out, given in (("a", ",".join(NAMES)), ("b", str(names_file))):
        assert main(["run", "--model", model, "--input", data, "--output", str(tmp_path / out), "--key-column", "id",
                     "--steps", "8", "--class-names", given, "--quiet"]) == 0
    rows = read_parquet_dir(tmp_path / "a")
    targets = np.asarray(rows.column("target").to_pylist())
    assert len(set(targets)) > 1  # the check below sees more than one class
    assert rows.column("target_name").to_pylist() == [NAMES[t] for t in targets]
    assert rows.schema.names.index("target_name") == rows.schema.names.index("target") + 1
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["settings"]["class_names"] == NAMES
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["settings"]["class_names"] == NAMES  # from the file
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    named = {g["value"]: g["name"] for g in summary["groups"] if g["kind"] == "target"}
    assert named and all(name == NAMES[int(value)] for value, name in named.items())
    metadata = pq.read_schema(next((tmp_path / "a").glob("attributions-*.parquet"))).metadata
    assert json.loads(metadata[b"attribution.class_names"]) == NAMES

    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    shown = [f"{NAMES[int(v)]} (class {v})" for v in named]
    assert all(label in page for label in shown), shown
    main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    compared = capsys.readouterr().out
    assert any(f"target={v} {NAMES[int(v)]}" in compared for v in named), compared


def test_a_wrong_number_of_class_names_or_a_missing_file_is_refused_with_what_to_give(linear_model, tabular_data, tmp_path, capsys):
    model, data = linear_model[0], tabular_data[0]
    args = ["run", "--model", model, "--input", data, "--key-column", "id", "--steps", "4", "--quiet"]
    assert main(args + ["--output", str(tmp_path / "a"), "--class-names", "cat,dog"]) == 2
    err = capsys.readouterr().err
    assert "class_names gives 2 names (cat, dog) but the model's output has 3 values; give one name per output value" in err, err
    assert main(args + ["--output", str(tmp_path / "b"), "--class-names", str(tmp_path / "none.txt")]) == 2
    assert "is neither a comma-separated list of names nor a local file" in capsys.readouterr().err
    assert main(args + ["--output", str(tmp_path / "c"), "--class-names", "cat,cat,dog"]) == 2
    assert "class_names repeats ['cat']" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abc")
