"""A misconfigured run fails on the launcher, before any worker starts, saying what to fix."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import write_vector_tfrecord
from pipeline.config import RunConfig
from pipeline.plan import resolve_plan

COLUMNS = [f"f{j}" for j in range(6)]


def _config(model, data, tmp_path, **extra):
    values = {"model": model, "input": data, "output": str(tmp_path / "out"), "inputs": {"features": COLUMNS}}
    values.update(extra)
    return RunConfig.from_mapping(values)


def test_the_plan_carries_the_compute_threads_set_or_the_launchers_default(linear_model, tabular_data, tmp_path):
    # A plan built without the launcher (pipeline.build.build_pipeline(config)) keeps an explicit setting too.
    assert resolve_plan(_config(linear_model[0], tabular_data[0], tmp_path, compute_threads=3)).settings.compute_threads == 3
    assert resolve_plan(_config(linear_model[0], tabular_data[0], tmp_path)).settings.compute_threads == 1
    assert resolve_plan(_config(linear_model[0], tabular_data[0], tmp_path), default_compute_threads=2).settings.compute_threads == 2


def test_valid_plan_maps_columns_and_builds_the_output_schema(linear_model, tabular_data, tmp_path):
    plan = resolve_plan(_config(linear_model[0], tabular_data[0], tmp_path, key_column="id", passthrough_columns=["label"]))
    assert plan.input_format == "parquet"
    assert [c.name for c in plan.schema.source_columns] == COLUMNS
    names = plan.settings.output_schema.names
    assert names[:4] == ["id", "label", "target", "target_score"]
    assert names[4:10] == [f"attr_{c}" for c in COLUMNS]
    assert names[10:] == ["convergence_delta", "convergence_delta_rel", "completeness_error", "attributions_finite"]
    metadata = plan.settings.output_schema.metadata
    assert metadata[b"attribution.method"] == b"integrated_gradients"
    assert len(metadata[b"attribution.model_sha256"]) == 64


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"input": "nowhere/*.parquet"}, "matches no files"),
        ({"inputs": {}}, r"model input 'features' \(shape \(6,\)\) matches no input column 'features' \(and the input has 7 "
                         r"numeric scalar columns that are not key, pass-through, label or slice columns nor read by another model input: "
                         r"id, f0, .*; read by "
                         r"default only when there are exactly 6; left out as label-like: label\); map it"),
        ({"inputs": {"features": "g*"}}, r"inputs\['features'\] pattern 'g\*' matches no input column"),
        ({"key_column": "ID"}, r"key column 'ID' is not a column of the input \(did you mean 'id'\?\)"),
        ({"inputs": {"features": COLUMNS[:5]}}, r"has shape \(6,\) \(6 values\) but is mapped to 5 columns"),
        ({"inputs": {"features": COLUMNS[:5] + ["nope"]}}, r"mapped to columns \['nope'\] that the input lacks"),
        ({"inputs": {"other": "f0"}}, r"inputs maps \['other'\], which the model does not have"),
        ({"target": 3}, r"target index 3 is out of range: the explained output has 3 values"),
        ({"target": "label:f0"}, "target labels must be integers"),
        ({"key_column": "missing"}, "key column 'missing' is not a column of the input"),
        ({"passthrough_columns": ["f0"], "key_column": "f0"}, "would clash in the output"),
        ({"output_name": "x"}, "output_name 'x' is not an output of the model"),
        ({"baseline": "file:nowhere.parquet"}, "matches no files"),
    ],
)
def test_misconfigurations_fail_fast(linear_model, tabular_data, tmp_path, extra, message):
    values = {"input": tabular_data[0], **extra}
    config = _config(linear_model[0], values.pop("input"), tmp_path, **values)
    with pytest.raises(ValueError, match=message):
        resolve_plan(config)


def test_list_column_length_must_match_the_model_input(tmp_path, linear_model):
    path = write_vector_tfrecord(tmp_path / "v.tfrecord", np.zeros((3, 5), np.float32))
    config = RunConfig.from_mapping({"model": linear_model[0], "input": path, "output": str(tmp_path / "o")})
    with pytest.raises(ValueError, match=r"column 'features' holds 5 values per record but model input 'features' has shape \(6,\)"):
        resolve_plan(config)


def test_integer_model_inputs_are_attributed_at_their_embedding(tmp_path):
    """An integer input used to be refused; it is now attributed at the first float layer after
    it, named in the plan with why (a SavedModel of the same model is refused: no layer graph)."""
    import keras

    inputs = keras.Input((4,), dtype="int32", name="tokens")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Embedding(10, 2, name="emb")(inputs)))
    model.save(str(tmp_path / "emb.keras"))
    pq.write_table(pa.table({"tokens": pa.array([[1, 2, 3, 4]], pa.list_(pa.int64()))}), str(tmp_path / "t.parquet"))
    config = RunConfig.from_mapping({"model": str(tmp_path / "emb.keras"), "input": str(tmp_path / "t.parquet"), "output": str(tmp_path / "o")})
    plan = resolve_plan(config)
    assert [(c.input, c.layer, c.positions, c.id_range) for c in plan.layers] == [("tokens", "emb", 4, 10)]
    assert "first float layer after model input 'tokens'" in plan.layers[0].reason
    assert plan.schema.model_inputs[0].columns[0].dtype == "int64"
    model.export(str(tmp_path / "exported"), verbose=False)
    config = RunConfig.from_mapping({"model": str(tmp_path / "exported"), "input": str(tmp_path / "t.parquet"), "output": str(tmp_path / "o2")})
    with pytest.raises(ValueError, match=r"model input 'tokens' has dtype int32.*is a SavedModel, which has no layer graph to split"):
        resolve_plan(config)


def test_unknown_extension_asks_for_the_format(tmp_path, linear_model, tabular_data):
    import shutil

    shutil.copy(tabular_data[0], tmp_path / "data.bin")
    config = _config(linear_model[0], str(tmp_path / "data.bin"), tmp_path)
    with pytest.raises(ValueError, match="pass --input-format parquet|tfrecord"):
        resolve_plan(config)
    assert resolve_plan(_config(linear_model[0], str(tmp_path / "data.bin"), tmp_path, input_format="parquet")).input_format == "parquet"


def test_a_vector_input_reads_the_remaining_numeric_columns_by_default(linear_model, tabular_data, tmp_path):
    """Key and label named: the six f-columns left are exactly what the (6,) input needs."""
    config = RunConfig.from_mapping({"model": linear_model[0], "input": tabular_data[0], "output": str(tmp_path / "out"),
                                     "key_column": "id", "target": "label:label"})
    assert [c.name for c in resolve_plan(config).schema.source_columns] == COLUMNS


def test_a_glob_maps_columns_in_file_order(linear_model, tmp_path):
    columns = {"id": pa.array([1, 2]), **{f"x{j}": pa.array([float(j)] * 2, pa.float32()) for j in (3, 1, 0, 2, 5, 4)}}
    pq.write_table(pa.table(columns), str(tmp_path / "d.parquet"))
    config = RunConfig.from_mapping({"model": linear_model[0], "input": str(tmp_path / "d.parquet"), "output": str(tmp_path / "out"),
                                     "inputs": {"features": "x*"}})
    assert [c.name for c in resolve_plan(config).schema.source_columns] == ["x3", "x1", "x0", "x2", "x5", "x4"]


def _token_files(tmp_path):
    from helpers import save_token_model, write_token_parquet

    model, _, _ = save_token_model(tmp_path / "tokens.keras", vocab=12, length=6, dim=4, classes=3, hidden=5)
    data = write_token_parquet(tmp_path / "tokens.parquet", np.ones((4, 6), int), ids=np.arange(4))
    return model, data


def test_layer_choices_that_cannot_work_stop_the_launcher(tmp_path):
    model, data = _token_files(tmp_path)

    def plan(**extra):
        return resolve_plan(RunConfig.from_mapping({"model": model, "input": data, "output": str(tmp_path / "o"), **extra}))

    with pytest.raises(ValueError, match=r"layer 'embeding' is not a layer of the model. Did you mean 'embedding'\?"):
        plan(layers=["embeding"])
    # a layer after the pooling has no positions left to line up with the ids
    with pytest.raises(ValueError, match=r"layer 'hidden' outputs shape \(5,\): 1 position\(s\) once its last axis is summed, but model input 'tokens' holds 6 values"):
        plan(layers=["hidden"])
    with pytest.raises(ValueError, match=r"the baseline 'id:12' cannot be computed at layer 'embedding'.*Use an id the layer takes"):
        plan(layer_baseline="id:12")
    assert plan(layer_baseline="id:11").settings.layer_baseline_id == 11
