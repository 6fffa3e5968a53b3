"""Loading .keras, .h5 and SavedModel models; safe mode; output selection; logits."""

import numpy as np
import pytest

from attributions.loading import load_model, model_fingerprint
from attributions.saved_model_ops import disallowed_ops
from helpers import linear_weights, save_linear_model

X = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_keras_model_describes_its_inputs_and_outputs(linear_model):
    path, weights, bias = linear_model
    model = load_model(path)
    assert model.kind == "keras"
    assert model.input_names == ("features",)
    assert model.input_shapes == ((6,),)
    assert model.output_sizes == (3,)
    np.testing.assert_allclose(model.model_functions().predict([X]), X @ weights + bias, rtol=1e-5, atol=1e-6)


def test_h5_and_saved_model_give_the_same_outputs(tmp_path, linear_model):
    import keras

    path, weights, bias = linear_model
    keras_model = keras.saving.load_model(path)
    keras_model.save(str(tmp_path / "legacy.h5"))
    keras_model.export(str(tmp_path / "saved_model"))
    for other in (str(tmp_path / "legacy.h5"), str(tmp_path / "saved_model")):
        model = load_model(other)
        fns = model.model_functions()
        np.testing.assert_allclose(fns.predict([X]), X @ weights + bias, rtol=1e-5, atol=1e-6)
        _, (grads,), _ = fns.gradients([X], np.array([0, 1, 2, 0], np.int32))
        np.testing.assert_allclose(grads, weights[:, [0, 1, 2, 0]].T, rtol=1e-6)
    assert load_model(str(tmp_path / "saved_model")).kind == "saved_model"


def test_explain_logits_removes_a_final_softmax(tmp_path):
    weights, bias = linear_weights()
    path = save_linear_model(tmp_path / "softmax.keras", weights, bias, activation="softmax")
    model = load_model(path)
    np.testing.assert_allclose(model.model_functions().predict([X]), _softmax(X @ weights + bias), rtol=1e-5)
    np.testing.assert_allclose(load_model(path).model_functions(explain_logits=True).predict([X]), X @ weights + bias, rtol=1e-5, atol=1e-5)


def test_explain_logits_through_a_separate_activation_layer(tmp_path):
    import keras

    weights, bias = linear_weights()
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3), keras.layers.Activation("softmax")])
    model.layers[0].set_weights([weights, bias])
    model.save(str(tmp_path / "act.keras"))
    logits = load_model(str(tmp_path / "act.keras")).model_functions(explain_logits=True).predict([X])
    np.testing.assert_allclose(logits, X @ weights + bias, rtol=1e-5, atol=1e-5)


def test_explain_logits_without_final_softmax_says_what_it_found(linear_model):
    with pytest.raises(ValueError, match="expected a final softmax or sigmoid. Drop --explain-logits"):
        load_model(linear_model[0]).model_functions(explain_logits=True)


def test_lambda_layer_is_refused_in_safe_mode_with_how_to_opt_in(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(1)])
    model.save(str(tmp_path / "lambda.keras"))
    with pytest.raises(ValueError, match="safe mode refuses.*--unsafe-deserialization"):
        load_model(str(tmp_path / "lambda.keras"))
    loaded = load_model(str(tmp_path / "lambda.keras"), unsafe_deserialization=True)
    assert loaded.input_shapes == ((3,),)


def test_multi_output_model_needs_an_output_name(tmp_path):
    import keras

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, [keras.layers.Dense(2, name="cls")(inputs), keras.layers.Dense(1, name="reg")(inputs)])
    model.save(str(tmp_path / "two.keras"))
    loaded = load_model(str(tmp_path / "two.keras"))
    with pytest.raises(ValueError, match=r"has 2 outputs \['cls', 'reg'\]; name the one to explain with --output-name"):
        loaded.model_functions()
    assert loaded.model_functions("reg").num_outputs == 1
    with pytest.raises(ValueError, match="output_name 'nope' is not an output"):
        loaded.model_functions("nope")


def test_files_that_are_not_models_fail_clearly(tmp_path):
    (tmp_path / "junk.keras").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="could not load .*junk.keras.* as a Keras model"):
        load_model(str(tmp_path / "junk.keras"))
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "missing.keras"))
    (tmp_path / "model.pkl").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown suffix"):
        load_model(str(tmp_path / "model.pkl"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="no saved_model.pb"):
        load_model(str(tmp_path / "empty_dir"))


def test_fingerprint_is_the_file_sha256(linear_model):
    import hashlib

    path = linear_model[0]
    with open(path, "rb") as handle:
        assert model_fingerprint(path) == hashlib.sha256(handle.read()).hexdigest()


def test_load_model_hashes_the_bytes_it_loads_and_refuses_other_bytes(linear_model, tmp_path):
    path = linear_model[0]
    model = load_model(path)
    assert model.sha256 == model_fingerprint(path)
    assert load_model(path, expected_sha256=model.sha256).sha256 == model.sha256
    with pytest.raises(ValueError, match=r"model '.*linear\.keras' changed after the run was launched: its bytes hash to "
                                         r"sha256 [0-9a-f]{16}\.\.\., but the launcher recorded 0000000000000000\.\.\."):
        load_model(path, expected_sha256="0" * 64)


def test_a_model_replaced_while_a_run_is_going_fails_the_run_loudly(linear_model, tabular_data, tmp_path, monkeypatch):
    import pipeline.run
    from helpers import save_linear_model
    from pipeline.config import RunConfig

    path, weights, bias = linear_model
    resolve = pipeline.run.resolve_plan

    def resolve_then_replace(config, *args):
        plan = resolve(config, *args)
        save_linear_model(path, weights * 2.0, bias)  # a new version written over the one fingerprinted
        return plan

    monkeypatch.setattr(pipeline.run, "resolve_plan", resolve_then_replace)
    config = RunConfig.from_mapping({"model": path, "input": tabular_data[0], "output": str(tmp_path / "out"), "method": "gradient",
                                     "inputs": {"features": [f"f{j}" for j in range(6)]}})
    with pytest.raises(Exception, match="changed after the run was launched"):
        pipeline.run.run_attribution(config)
    assert not (tmp_path / "out" / "manifest.json").exists()


def _keras_exports(tmp_path):
    import keras

    inputs = keras.Input((6,), name="features")
    dense = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4, activation="relu")(inputs)))
    image = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.BatchNormalization()(keras.layers.MaxPooling2D()(x))
    conv = keras.Model(image, keras.layers.Dense(2)(keras.layers.Dropout(0.2)(keras.layers.Flatten()(x))))
    sequence = keras.Input((5, 2), name="sequence")
    recurrent = keras.Model(sequence, keras.layers.Dense(2)(keras.layers.LSTM(3)(sequence)))  # a While loop over tensor lists
    for name, model in (("dense", dense), ("conv", conv), ("lstm", recurrent)):
        model.export(str(tmp_path / name), verbose=False)
    return str(tmp_path / "dense"), str(tmp_path / "conv"), str(tmp_path / "lstm")


def test_keras_exported_saved_models_pass_the_op_allowlist(tmp_path):
    for path in _keras_exports(tmp_path):
        with open(f"{path}/saved_model.pb", "rb") as handle:
            assert disallowed_ops(handle.read()) == {}, path
        model = load_model(path)
        assert model.kind == "saved_model" and model.output_dtypes[0] == "float32"


def test_a_saved_model_with_side_effects_is_refused_before_it_runs_unless_trusted(tmp_path):
    from corpus import save_file_writing_saved_model

    written = tmp_path / "written.txt"
    path = save_file_writing_saved_model(tmp_path / "writer", written)
    with pytest.raises(ValueError, match=r"contains op\(s\) that can have side effects .*: WriteFile \(in function "
                                         r"'__inference_serve_\d+'\)\. Only if you trust this model, pass --unsafe-deserialization"):
        load_model(path)
    assert not written.exists()
    model = load_model(path, unsafe_deserialization=True)  # the opt-in: loaded, and it does what it says
    model.model_functions().predict([X])
    assert written.read_text() == "written by the model"


def test_a_tf1_saved_model_with_a_saver_is_refused_before_loading_writes_anything(tmp_path):
    """TF1 format: the loader runs the saver's restore op, to which this model attached a SaveV2."""
    from corpus import save_tf1_saved_model_writing_on_load

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = save_tf1_saved_model_writing_on_load(tmp_path / "tf1", elsewhere / "chosen")
    with pytest.raises(ValueError, match=r"is in TF1 format \(no object graph\) with a saver \(MetaGraph tags \['serve'\]\)"):
        load_model(path)
    assert list(elsewhere.iterdir()) == []
    with open(f"{path}/saved_model.pb", "rb") as handle:  # and nothing of its saver is exempt from the allowlist
        assert set(disallowed_ops(handle.read())) == {"SaveV2", "RestoreV2"}
    load_model(path, unsafe_deserialization=True)  # the opt-in: loaded, and its restore op did what it says
    assert sorted(p.name for p in elsewhere.iterdir()) == ["chosen.data-00000-of-00001", "chosen.index"]


def test_a_function_the_object_graph_names_is_checked_strictly_even_when_the_saver_reaches_it(tmp_path):
    """TF2 format: the loader may call any function the object graph names (a saveable's restore
    function runs while loading), so a saver reaching it too does not exempt its SaveV2."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    class Leaky(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones((6, 3)))

        @tf.function(input_signature=[])
        def leak(self):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt"), tensor_names=["w"], shape_and_slices=[""], tensors=[self.w])
            return tf.constant(0.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
        def serve(self, features):
            return {"scores": tf.matmul(features, self.w)}

    module = Leaky()
    tf.saved_model.save(module, str(tmp_path / "leaky"), signatures={"serving_default": module.serve})
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((tmp_path / "leaky" / "saved_model.pb").read_bytes())
    graph = saved_model.meta_graphs[0].graph_def
    leak = next(f.signature.name for f in graph.library.function if "leak" in f.signature.name)
    restore = next(f for f in graph.library.function if "traced_restore" in f.signature.name)
    call = restore.node_def.add(name="call_leak", op="StatefulPartitionedCall")
    call.attr["f"].func.name = leak  # the saver's restore function now reaches `leak` too
    found = disallowed_ops(saved_model.SerializeToString())
    assert [where for where in found.get("SaveV2", [])] == [f"function {leak!r}"]


def test_checkpoint_ops_are_refused_where_a_signature_can_reach_them(tmp_path):
    import tensorflow as tf

    class Saver(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones((6, 3)))

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
        def serve(self, features):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt"), tensor_names=["w"], shape_and_slices=[""], tensors=[self.w])
            return {"scores": tf.matmul(features, self.w)}

    module = Saver()
    tf.saved_model.save(module, str(tmp_path / "saver"), signatures={"serving_default": module.serve})
    with pytest.raises(ValueError, match=r"not on the allowlist of side-effect-free ops: SaveV2 \(in function '__inference_serve"):
        load_model(str(tmp_path / "saver"))
    assert not list(tmp_path.glob("ckpt*"))
