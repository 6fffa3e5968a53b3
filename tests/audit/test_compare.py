"""compare on real runs: identical data shows no drift; a shifted feature is caught, by value."""

import dataclasses
import json
import re

import numpy as np
import pytest

from audit.compare import DriftThresholds, compare_runs, format_comparison
from audit.runs import load_run
from helpers import write_tabular_parquet
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.run import run_attribution

COLUMNS = [f"f{j}" for j in range(6)]


def _run(model, features, directory, **extra):
    data = write_tabular_parquet(directory.with_suffix(".parquet"), features, ids=np.arange(len(features)), labels=np.arange(len(features)) % 2)
    config = RunConfig.from_mapping({
        "model": model, "input": data, "output": str(directory), "method": "gradient_x_input", "target": 0,
        "inputs": {"features": COLUMNS}, "key_column": "id", "slice_columns": ["label"], **extra,
    })
    run_attribution(config)
    return str(directory)


@pytest.fixture
def runs(linear_model, tmp_path):
    model, weights, _ = linear_model
    rng = np.random.default_rng(5)
    features = rng.normal(size=(400, 6)).astype(np.float32)
    shifted = features.copy()
    shifted[:, 0] *= 3.0  # the same rows with feature f0 three times larger
    return {
        "a": _run(model, features, tmp_path / "a"),
        "same": _run(model, features, tmp_path / "same"),
        "shifted": _run(model, shifted, tmp_path / "shifted"),
        "weights": weights,
        "features": features,
    }


def test_identical_data_shows_no_drift(runs):
    document = compare_runs(load_run(runs["a"]), load_run(runs["same"]))
    assert not document["drift"] and document["reasons"] == [] and document["warnings"] == []
    overall = document["groups"][0]
    assert (overall["kind"], overall["spearman"], overall["kendall_tau_b"], overall["top_k_overlap"]) == ("overall", 1.0, 1.0, 1.0)
    assert all(f["change"] == 0 for f in overall["features"])
    assert {(g["kind"], g["value"]) for g in document["groups"]} == {("overall", "all"), ("target", "0"), ("slice:label", "0"), ("slice:label", "1")}


def test_a_shifted_feature_is_reported_with_its_exact_change_and_flagged(runs):
    document = compare_runs(load_run(runs["a"]), load_run(runs["shifted"]))
    overall = document["groups"][0]
    f0 = next(f for f in overall["features"] if f["feature"] == "f0")
    w0, x0 = abs(runs["weights"][0, 0]), np.abs(runs["features"][:, 0]).mean()
    assert f0["mean_abs_a"] == pytest.approx(w0 * x0, rel=1e-5)
    assert f0["relative_change"] == pytest.approx(2.0, rel=1e-5)  # gradient x input is linear in x
    assert all(f["change"] == pytest.approx(0, abs=1e-9) for f in overall["features"] if f["feature"] != "f0")
    assert document["drift"]
    assert any("overall=all: 1 important feature(s) changed by more than 50%: f0 +200%" in r for r in document["reasons"])
    text = format_comparison(document)
    assert "DRIFT" in text and "f0" in text.split("most changed features")[1].splitlines()[2]


def test_thresholds_decide_and_small_groups_are_not_judged(runs):
    loose = DriftThresholds(max_relative_change=5.0, min_spearman=0.0, min_top_k_overlap=0.0, max_prediction_shift=100.0)
    assert not compare_runs(load_run(runs["a"]), load_run(runs["shifted"]), loose)["drift"]
    strict_rows = DriftThresholds(min_group_rows=1000)
    document = compare_runs(load_run(runs["a"]), load_run(runs["shifted"]), strict_rows)
    assert not any(g["checked"] for g in document["groups"]) and not document["drift"]
    with pytest.raises(ValueError, match="min_spearman must be a finite number >= 0"):
        DriftThresholds(min_spearman=-1)


def test_cli_exit_status_json_and_thresholds(runs, tmp_path, capsys):
    assert main(["compare", runs["a"], runs["same"], "--fail-on-drift"]) == 0
    assert main(["compare", runs["a"], runs["shifted"]]) == 0  # drift is reported, exit 0 unless asked
    out = tmp_path / "cmp.json"
    assert main(["compare", runs["a"], runs["shifted"], "--fail-on-drift", "--json", str(out)]) == 4
    assert json.loads(out.read_text())["drift"] is True
    assert main(["compare", runs["a"], runs["shifted"], "--fail-on-drift", "--max-relative-change", "5",
                 "--min-spearman", "0", "--min-top-k-overlap", "0", "--max-prediction-shift", "100"]) == 0
    assert "no drift beyond the thresholds" in capsys.readouterr().out


def test_incomplete_or_missing_runs_are_refused(runs, tmp_path, capsys):
    assert main(["compare", runs["a"], str(tmp_path / "nowhere")]) == 2
    assert "has no manifest.json: it is not a run directory, or the run did not finish" in capsys.readouterr().err
    manifest_path = tmp_path / "same" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "status": "failed", "failure": "counts do not reconcile"}))
    with pytest.raises(ValueError, match="did not complete .*counts do not reconcile"):
        load_run(runs["same"])


def test_json_ready_turns_nan_and_inf_into_null():
    from audit.compare import json_ready

    assert json_ready({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"}) == {"a": None, "b": [1.0, None], "c": "x"}
    json.dumps(json_ready({"rho": float("nan")}), allow_nan=False)


def test_runs_without_common_features_are_refused_naming_both_feature_sets(runs, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(runs["same"], other)
    summary_path = other / "summary.json"
    summary = json.loads(summary_path.read_text())
    for j, feature in enumerate(summary["features"]):
        feature["name"] = f"pixel_{j}"
    summary_path.write_text(json.dumps(summary))
    assert main(["compare", runs["a"], str(other), "--fail-on-drift"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"have no feature in common \(A: \['f0', 'f1', 'f2', 'f3', 'f4', \.\.\. \(6 in all\)\]; "
                     r"B: \['pixel_0', .*\(6 in all\)\]\), so their importances cannot be compared", err), err


def test_json_and_its_folder_are_created_and_a_folder_path_is_refused(runs, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "cmp.json"
    assert main(["compare", runs["a"], runs["same"], "--json", str(out)]) == 0
    assert json.loads(out.read_text())["drift"] is False
    assert main(["compare", runs["a"], runs["same"], "--json", str(tmp_path)]) == 2
    assert "--json '%s' is a folder; give the path of a file to write" % tmp_path in capsys.readouterr().err


def test_json_safe_writes_non_finite_floats_as_null():
    from audit.json_safe import dumps

    text = dumps({"a": float("nan"), "b": [np.float32("inf"), np.float64(2.5)], "c": (1, "x")})
    assert json.loads(text) == {"a": None, "b": [None, 2.5], "c": [1, "x"]}
    assert "NaN" not in text and "Infinity" not in text


def test_the_manifest_writer_writes_non_finite_floats_as_null(tmp_path):
    from pipeline.output_dir import write_json

    write_json(str(tmp_path / "manifest.json"), {"metrics": {"mean": float("nan")}, "settings": {"x": np.float32("-inf")}})
    text = (tmp_path / "manifest.json").read_text()
    assert json.loads(text) == {"metrics": {"mean": None}, "settings": {"x": None}} and "NaN" not in text


def _with_manifest(run_dir, tmp_path, name, **changes):
    """A copy of a run whose manifest has `changes` (settings.X=..., model=...) applied."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(run_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for key, value in changes.items():
        if key == "model":
            manifest["model"].update(value)
        else:
            manifest["settings"][key] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return str(copy)


def test_runs_of_different_methods_or_targets_are_refused_unless_allowed_and_a_new_model_is_said_first(runs, tmp_path, capsys):
    other_method = _run(load_run(runs["a"]).manifest["model"]["path"], runs["features"], tmp_path / "gradient", method="gradient")
    assert main(["compare", runs["a"], other_method, "--fail-on-drift"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "differ in method (gradient_x_input vs gradient)" in err and "--allow-different" in err

    other_target = _with_manifest(runs["same"], tmp_path, "target", target="1")
    assert main(["compare", runs["a"], other_target]) == 2
    assert "differ in target (0 vs 1)" in capsys.readouterr().err
    other_model = _with_manifest(runs["same"], tmp_path, "model", model={"sha256": "f" * 64, "path": "/elsewhere/model.keras"})
    assert main(["compare", runs["a"], other_model, "--json", str(tmp_path / "model.json")]) == 0  # a retrained model: compared
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("MODEL CHANGED: sha256 ") and lines[2].endswith("... -> ffffffffffff...: changes below are the new "
                                                                               "model's as much as the data's")
    assert json.loads((tmp_path / "model.json").read_text())["model_change"].endswith("-> ffffffffffff...")
    moved_model = _with_manifest(runs["same"], tmp_path, "moved", model={"path": "/a/dated/copy/of/the/same.keras"})
    assert main(["compare", runs["a"], moved_model, "--fail-on-drift"]) == 0  # the same bytes elsewhere: the same model
    assert "MODEL CHANGED" not in capsys.readouterr().out

    out = tmp_path / "cmp.json"
    assert main(["compare", runs["a"], other_method, "--allow-different", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NOTE: this comparison spans different method (gradient_x_input vs gradient)" in text
    assert json.loads(out.read_text())["spans_different"] == ["method (gradient_x_input vs gradient)"]
    with pytest.raises(ValueError, match="differ in method"):
        compare_runs(load_run(runs["a"]), load_run(other_method))


def test_drift_reasons_are_a_list_and_the_feature_order_is_stated(runs):
    text = format_comparison(compare_runs(load_run(runs["a"]), load_run(runs["shifted"])))
    verdict = text.split("\nDRIFT:\n")[1].splitlines()
    assert len(verdict) >= 2 and all(line.startswith("  - ") for line in verdict)
    assert "most changed features (overall, mean |attribution|; sorted by |change| of mean |attribution|, largest first)" in text
    assert re.search(r"\nf0 +[0-9.]+ +[0-9.]+ +\+200\.0%  \[\+[0-9.e-]+, \+[0-9.e-]+\]\n", text)  # its interval excludes 0


def test_every_threshold_flag_says_what_it_measures_its_default_and_unit(capsys):
    from pipeline.cli import build_parser

    for command in ("compare", "report"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "THRESHOLD_" not in text and "drift threshold (default" not in text
        for f in dataclasses.fields(DriftThresholds):
            flag = "--" + f.name.replace("_", "-")
            help_text = re.search(re.escape(flag) + r" [A-Z]+ (.*?)\(default ([^;]+); unit: ([^)]+)\)", text)
            assert help_text and help_text.group(2) == str(f.default) and len(help_text.group(1)) > 30, (command, flag)
        assert "--allow-different" in text


def test_completeness_shares_of_different_measures_are_not_compared(linear_model, tmp_path):
    """A run summarized before completeness_error (summary format 1, |delta| / |dF|) against one
    after: the shares over the threshold count different things, so they are not judged."""
    import copy

    model, _, _ = linear_model
    features = np.random.default_rng(6).normal(size=(150, 6)).astype(np.float32)
    run = load_run(_run(model, features, tmp_path / "ig", method="integrated_gradients", target="predicted", steps=8))
    overall = run.groups[("overall", "all")]["completeness"]
    assert overall["measure"].startswith("completeness_error = |delta| / max(")
    assert compare_runs(run, run)["groups"][0]["completeness"] == {"share_over_threshold_a": 0.0, "share_over_threshold_b": 0.0, "change": 0.0,
                                                                   "change_interval": [0.0, 0.0], "beyond_noise": False}
    old = dataclasses.replace(run, summary=copy.deepcopy(run.summary))
    for group in old.summary["groups"]:
        del group["completeness"]["measure"]
        group["completeness"]["share_over_threshold"] = 0.9  # what an exploding measure could read
    document = compare_runs(old, run)
    assert all(g["completeness"] is None for g in document["groups"]) and not document["drift"]
    assert any("measure completeness differently" in w and "summary format 1" in w for w in document["warnings"])


def _token_run(model, tokens, directory):
    from helpers import write_token_parquet

    data = write_token_parquet(directory.with_suffix(".parquet"), tokens, ids=np.arange(len(tokens)))
    config = RunConfig.from_mapping({
        "model": model, "input": data, "output": str(directory), "method": "integrated_gradients", "target": 0,
        "key_column": "id", "layer_baseline": "id:0", "steps": 4,
    })
    run_attribution(config)
    return str(directory)


def test_token_importance_is_compared_per_token_against_the_closed_form(tmp_path):
    """Linear model over mean-pooled embeddings, target 0, baseline id 0: every position holding
    token t gets (e(t) - e(0)) . w / T, so a token's mean |attribution| is known exactly; two
    models with other embeddings rank the tokens differently, and compare says so."""
    from audit.rank import spearman, top_k_overlap
    from helpers import save_token_model

    length, vocab = 6, 12
    tokens = np.random.default_rng(0).integers(0, vocab, size=(300, length))
    runs, importance = [], []
    for seed in (0, 1):
        model, embedding, weights = save_token_model(tmp_path / f"tokens{seed}.keras", vocab=vocab, length=length, classes=2, seed=seed)
        runs.append(load_run(_token_run(model, tokens, tmp_path / f"run{seed}")))
        importance.append(np.abs((embedding - embedding[0]) @ weights[:, 0]) / length)  # (vocab,)
    assert runs[0].tokens is not None and set(runs[0].tokens.column("token_id").to_pylist()) == set(range(vocab))

    same = compare_runs(runs[0], runs[0])
    assert [(r["feature"], r["target"]) for r in same["tokens"]] == [("tokens", "all"), ("tokens", "0")]
    assert all(r["spearman"] == pytest.approx(1.0) and r["top_k_overlap"] == 1.0 and not r["drift"] for r in same["tokens"])

    moved = compare_runs(runs[0], runs[1], DriftThresholds(top_k=4), allow_different=True)
    overall = moved["tokens"][0]
    assert overall["tokens"] == vocab and overall["checked"]
    assert overall["spearman"] == pytest.approx(spearman(importance[0], importance[1]), abs=1e-9)
    assert overall["top_k_overlap"] == top_k_overlap(importance[0], importance[1], 4)
    assert overall["spearman"] < 0.8  # these two random embeddings rank the tokens differently: drift
    assert any(reason.startswith("tokens of tokens, target=all: Spearman") for reason in moved["reasons"])
    biggest = overall["most_changed"][0]
    assert abs(biggest["mean_b"] - biggest["mean_a"]) == pytest.approx(abs(biggest["change"]))
    assert "tokens (mean |attribution| per token" in format_comparison(moved)


def test_the_drift_table_has_a_row_per_group_and_feature_with_flags_and_reasons(runs, tmp_path, capsys):
    """compare --table: what a dashboard reads. f0, three times larger in B, is flagged in every
    judged group with its reason; the other features are not; the nDCG is in the printed table."""
    import pyarrow.parquet as pq

    from pipeline.cli import main

    main(["compare", str(runs["a"]), str(runs["shifted"]), "--table", str(tmp_path / "drift" / "table.parquet")])
    printed = capsys.readouterr().out
    assert " nDCG " in printed.splitlines()[3]
    table = pq.read_table(tmp_path / "drift" / "table.parquet").to_pylist()
    document = compare_runs(load_run(runs["a"]), load_run(runs["shifted"]))
    assert len(table) == sum(len(g["features"]) for g in document["groups"])
    assert {r["group_kind"] for r in table} == {"overall", "target", "slice:label"}
    assert {r["slice"] for r in table if r["group_kind"] == "slice:label"} == {"label=0", "label=1"}
    flagged = {(r["group_kind"], r["group_value"], r["feature"]) for r in table if r["flagged"]}
    assert flagged and {f for _, _, f in flagged} == {"f0"}
    row = next(r for r in table if r["flagged"])
    assert row["reason"].startswith("mean |attribution| changed +200%") and row["interval_low"] > 0 and row["after"] > row["before"]


def test_runs_with_their_own_median_baselines_are_warned_and_a_pinned_reference_is_not(linear_model, tmp_path):
    """The default tabular baseline is the median of each run's own input: two halves of one dataset
    get two baselines, which moves every attribution (beyond the intervals, which hold the baseline
    fixed). compare says so; --baseline median:REFERENCE gives both runs the same one."""
    model, _, _ = linear_model
    rng = np.random.default_rng(9)
    features = rng.normal(size=(400, 6)).astype(np.float32)
    reference = write_tabular_parquet(tmp_path / "reference.parquet", features, ids=np.arange(400))
    own = [_run(model, features[part], tmp_path / f"own{i}", method="integrated_gradients", baseline="median")
           for i, part in enumerate((slice(0, 200), slice(200, 400)))]
    document = compare_runs(load_run(own[0]), load_run(own[1]))
    assert any(w.startswith("the runs' baselines differ (input features") for w in document["warnings"])
    pinned = [_run(model, features[part], tmp_path / f"pinned{i}", method="integrated_gradients", baseline=f"median:{reference}")
              for i, part in enumerate((slice(0, 200), slice(200, 400)))]
    runs = [load_run(p) for p in pinned]
    assert runs[0].manifest["baseline"]["values"] == runs[1].manifest["baseline"]["values"]
    assert runs[0].manifest["baseline"]["setting"] == f"median:{reference}"
    assert not any("baselines differ" in w for w in compare_runs(*runs)["warnings"])
