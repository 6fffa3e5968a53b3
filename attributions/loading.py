"""Loading Keras 3 (`.keras`, legacy `.h5`) and TensorFlow SavedModel models, and describing
their inputs. Files are read through a `ModelStorage`: by default `tf.io.gfile` (local paths);
the pipeline passes one over Beam's filesystems for s3:// and gs:// (transforms.storage), so that
no path depends on TensorFlow's own filesystem plugins (TF 2.21 has no s3://, and its gs://
ignores the storage emulator and the pipeline's options).

Keras files are loaded with ``safe_mode=True`` (no arbitrary code, e.g. `Lambda` layers) unless the
caller opts out with ``unsafe_deserialization=True``. A SavedModel is a graph and runs no Python code
when loaded, but its graph can have side effects (write files, print, run Python through py_func):
unless the caller opts out the same way, every op of its graph must be on the allowlist of
`attributions.saved_model_ops`. Its ``serving_default`` signature is what is explained.

The bytes loaded are the bytes fingerprinted: the model (a file, or every file of a SavedModel
directory) is copied once into a private temporary directory and hashed while it is copied, and the
copy is what is loaded. The launcher records that sha256; a worker given it (``expected_sha256``)
refuses a model whose bytes differ, e.g. a file replaced while the job was running. Copying costs
one read of the model per process, which loading costs anyway; hashing the original path and then
loading it would leave a window in which the file can change between the two.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional, Protocol, Sequence

import numpy as np
import tensorflow as tf

from attributions.layers import LayerSplit, split_model
from attributions.model_functions import ModelFunctions, build_model_functions
from attributions.saved_model_ops import disallowed_ops, legacy_savers

__all__ = ["LoadedModel", "ModelStorage", "load_model", "model_fingerprint"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_LOGIT_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass
class LoadedModel:
    """A model and what the pipeline needs to know about it.

    input_names/input_shapes/input_dtypes: one entry per model input, in call order; shapes exclude
      the batch dimension.
    output_names/output_sizes: one entry per model output; sizes are the flattened per-example size.
    """

    path: str
    kind: str  # 'keras' or 'saved_model'
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    output_names: tuple[str, ...]
    output_sizes: tuple[int, ...]
    _call_all: Callable[[tuple], list]  # inputs -> every output tensor, in output_names order
    _keras_model: Any = None
    output_dtypes: tuple[str, ...] = ()  # one per output, e.g. 'float32'
    sha256: str = ""  # of the bytes loaded (see model_fingerprint)

    def weights(self) -> list:
        """The model's trainable variables (each with .numpy() and .assign()); a SavedModel's are
        those its serving signature captures (all of them where none is marked trainable)."""
        if self.kind == "keras":
            return list(self._keras_model.trainable_weights)
        signature = self._keras_model.signatures["serving_default"]
        return list(signature.trainable_variables or signature.variables)

    def output_index(self, output_name: Optional[str]) -> int:
        if output_name is None:
            if len(self.output_names) > 1:
                raise ValueError(
                    f"the model has {len(self.output_names)} outputs {list(self.output_names)}; "
                    f"name the one to explain with --output-name (config key 'output_name')."
                )
            return 0
        if output_name not in self.output_names:
            raise ValueError(
                f"output_name {output_name!r} is not an output of the model; its outputs are "
                f"{list(self.output_names)}."
            )
        return self.output_names.index(output_name)

    def model_functions(
        self, output_name: Optional[str] = None, explain_logits: bool = False, concurrent_calls: int = 1,
        xla: bool = False,
    ) -> ModelFunctions:
        """Compiled predict/gradient functions for one output (see `model_functions`), running up
        to `concurrent_calls` chunks at once (`attributions.concurrency`); xla: gradients compiled
        whole with XLA (`build_model_functions`)."""
        index = self.output_index(output_name)
        if explain_logits:
            output_fn = self._logits_fn(index)
        else:
            def output_fn(inputs):
                return self._call_all(inputs)[index]
        return build_model_functions(output_fn, self.input_shapes, self.output_sizes[index], concurrent_calls, xla)

    def layer_functions(
        self, layers: Sequence[str], output_name: Optional[str] = None, explain_logits: bool = False,
        concurrent_calls: int = 1, xla: bool = False,
    ) -> tuple[LayerSplit, ModelFunctions]:
        """The model split at `layers` (`attributions.layers.split_model`) and the compiled
        predict/gradient functions of its upper part, whose inputs are the layers' activations
        followed by the model inputs the upper part still reads (`split.kept_inputs`)."""
        if self.kind != "keras":
            raise ValueError(
                f"attributions at a layer (layers {list(layers)}) need a Keras model to split; {self.path} is a "
                f"SavedModel, which has no layer graph. Pass the .keras file the SavedModel was exported from."
            )
        index = self.output_index(output_name)
        split = split_model(self._keras_model, layers, self._explained_tensor(index, explain_logits))
        shapes = split.activation_shapes + tuple(self.input_shapes[self.input_names.index(n)] for n in split.kept_inputs)
        return split, build_model_functions(split.upper, shapes, self.output_sizes[index], concurrent_calls, xla)

    def grad_cam(self, layer: Optional[str], output_name: Optional[str] = None, explain_logits: bool = False):
        """`attributions.grad_cam.GradCam` of this Keras model at `layer` (None: the last layer with a
        4-D output, `conv_layer`) for one output, compiled once."""
        from attributions.grad_cam import GradCam, conv_layer

        if self.kind != "keras":
            raise ValueError(
                f"grad_cam reads a layer's activations, which needs a Keras model (.keras/.h5); {self.path!r} is a "
                f"SavedModel. Attribute the Keras file, or use another method."
            )
        index = self.output_index(output_name)
        return GradCam(self._keras_model, conv_layer(self._keras_model, layer), self._explained_tensor(index, explain_logits))

    def _explained_tensor(self, index: int, explain_logits: bool):
        """The KerasTensor explained: output `index`, or with explain_logits the value before its
        final softmax/sigmoid (`_logits_tensor`)."""
        return self._logits_tensor(index) if explain_logits else self._keras_model.outputs[index]

    def _logits_tensor(self, index: int):
        """The KerasTensor before output `index`'s final softmax/sigmoid (switching a Dense
        layer's own activation off, as `_logits_fn` does)."""
        import keras

        layer = self._keras_model.outputs[index]._keras_history.operation
        if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
            self._logits_fn(index)  # validates the activation
            return layer.input
        self._logits_fn(index)  # validates it and switches the layer's activation off
        return self._keras_model.outputs[index]

    def ends_in_softmax_or_sigmoid(self, output_name: Optional[str] = None) -> bool:
        """Whether the output comes from a final softmax or sigmoid that explain_logits can take
        off (a Keras model only; nothing is changed)."""
        if self.kind != "keras":
            return False
        import keras

        layer = self._keras_model.outputs[self.output_index(output_name)]._keras_history.operation
        if isinstance(layer, keras.layers.Softmax):
            return True
        activation = getattr(layer, "activation", None)
        return getattr(activation, "__name__", str(activation)) in _LOGIT_ACTIVATIONS

    def _logits_fn(self, index: int) -> Callable[[tuple], tf.Tensor]:
        """The explained output before its final softmax/sigmoid."""
        name = self.output_names[index]
        if self.kind != "keras":
            raise ValueError(
                f"explain_logits needs a Keras model to find the layer before the final activation; "
                f"{self.path} is a SavedModel. Export the logits as their own output instead."
            )
        import keras

        model = self._keras_model
        layer = model.outputs[index]._keras_history.operation
        activation = getattr(layer, "activation", None)
        activation_name = getattr(activation, "__name__", str(activation))
        if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)) and (
            isinstance(layer, keras.layers.Softmax) or activation_name in _LOGIT_ACTIVATIONS
        ):
            pre_activation = keras.Model(model.inputs, layer.input)

            def output_fn(inputs):
                return pre_activation(list(inputs), training=False)

            return output_fn
        if activation_name in _LOGIT_ACTIVATIONS or getattr(layer, "_logits_switched", False):
            # This process owns the loaded copy: switching its last activation off is safe. The
            # flag lets a second caller (e.g. Grad-CAM after the gradient functions) find it switched.
            layer.activation = keras.activations.linear
            layer._logits_switched = True
            return lambda inputs: self._call_all(inputs)[index]
        raise ValueError(
            f"explain_logits was requested but output {name!r} comes from layer {layer.name!r} with "
            f"activation {activation_name!r}; expected a final softmax or sigmoid. Drop "
            f"--explain-logits to explain the output as it is."
        )


class ModelStorage(Protocol):
    """Where a model's files are read from (paths as the user gave them)."""

    def exists(self, path: str) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def files_under(self, directory: str) -> list[str]:
        """Every file below `directory` (any depth), as full paths."""

    def open(self, path: str) -> BinaryIO: ...


class _GFileStorage:
    """tf.io.gfile: local paths (and whatever filesystem plugins TensorFlow has)."""

    def exists(self, path: str) -> bool:
        return tf.io.gfile.exists(path)

    def isdir(self, path: str) -> bool:
        return tf.io.gfile.isdir(path)

    def files_under(self, directory: str) -> list[str]:
        return [f"{root.rstrip('/')}/{name}" for root, _, names in tf.io.gfile.walk(directory) for name in names]

    def open(self, path: str) -> BinaryIO:
        return tf.io.gfile.GFile(path, "rb")


def _model_files(path: str, storage: ModelStorage) -> list[tuple[str, str]]:
    """(relative name, full path) of the model's files, in fingerprint order: the file itself
    (relative name ''), or every file under a SavedModel directory ('/variables/...')."""
    if not storage.isdir(path):
        return [("", path)]
    base = path.rstrip("/")
    files = sorted(storage.files_under(base))
    return [(file[len(base):], file) for file in files]


def _copy_and_hash(path: str, workdir: str, storage: ModelStorage) -> tuple[str, str]:
    """Copies the model at `path` (local or remote) into `workdir`, hashing the bytes as they are
    copied; returns (the copy's path, sha256 hex as model_fingerprint computes it)."""
    digest = hashlib.sha256()
    target = os.path.join(workdir, os.path.basename(path.rstrip("/")))
    is_dir = storage.isdir(path)
    for relative, source in _model_files(path, storage):
        digest.update(relative.encode())
        destination = target + relative
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with storage.open(source) as reader, open(destination, "wb") as writer:
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                writer.write(chunk)
    if is_dir:
        os.makedirs(target, exist_ok=True)
    return target, digest.hexdigest()


def load_model(
    path: str, unsafe_deserialization: bool = False, expected_sha256: Optional[str] = None, storage: Optional[ModelStorage] = None
) -> LoadedModel:
    """Loads the model at `path` (.keras, .h5 or a SavedModel directory).

    expected_sha256: the fingerprint the launcher recorded; a model whose bytes differ is refused.
    storage: where the files are read from (default: tf.io.gfile).
    Raises ValueError with what to do when the path is missing, is not a model, holds code that
    safe mode refuses, or changed since the launcher fingerprinted it.
    """
    storage = storage or _GFileStorage()
    if not storage.exists(path):
        raise ValueError(f"model path {path!r} does not exist; pass a .keras/.h5 file or a SavedModel directory.")
    with tempfile.TemporaryDirectory(prefix="attribution-model-") as workdir:
        local, sha256 = _copy_and_hash(path, workdir, storage)
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise ValueError(
                f"model {path!r} changed after the run was launched: its bytes hash to sha256 {sha256[:16]}..., "
                f"but the launcher recorded {expected_sha256[:16]}... in the manifest. Refusing to attribute "
                f"with a different model than the one recorded; do not replace a model while a run uses it "
                f"(write new versions to new paths), and launch the run again."
            )
        if tf.io.gfile.isdir(local):
            if not tf.io.gfile.exists(os.path.join(local, "saved_model.pb")):
                raise ValueError(
                    f"model directory {path!r} has no saved_model.pb; expected a TensorFlow SavedModel "
                    f"directory or a .keras/.h5 file."
                )
            model = _load_saved_model(path, local, unsafe_deserialization)
        elif not path.lower().endswith(KERAS_SUFFIXES):
            raise ValueError(
                f"model file {path!r} has an unknown suffix; expected one of {list(KERAS_SUFFIXES)} or "
                f"a SavedModel directory."
            )
        else:
            model = _load_keras(path, local, unsafe_deserialization)
    model.sha256 = sha256
    return model


def _load_keras(path: str, local: str, unsafe_deserialization: bool) -> LoadedModel:
    import keras

    if local.lower().endswith(".keras") and not zipfile.is_zipfile(local):
        raise ValueError(
            f"could not load {path!r} as a Keras model: it is not a complete .keras (zip) archive "
            f"({os.path.getsize(local):,} bytes; truncated or corrupted?). Save or copy the model again."
        )
    try:
        model = keras.saving.load_model(local, compile=False, safe_mode=not unsafe_deserialization)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ValueError(
                f"the model {path!r} contains code (e.g. a Lambda layer) that safe mode refuses to "
                f"deserialize. Only if you trust this file, pass --unsafe-deserialization "
                f"(config key 'unsafe_deserialization: true'). Keras said: {error}"
            ) from None
        _raise_if_unknown_class(path, error)
        raise ValueError(f"could not load {path!r} as a Keras model: {error}") from None
    except Exception as error:  # Keras raises many types for a file that is not a model.
        _raise_if_unknown_class(path, error)
        raise ValueError(
            f"could not load {path!r} as a Keras model ({type(error).__name__}: {error}); check that "
            f"it is a .keras/.h5 file saved by Keras."
        ) from None
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"the Keras model {path!r} has no defined inputs (a subclassed model that was never "
            f"built?); save a functional or Sequential model, or export a SavedModel."
        )
    _check_layer_names(path, model)
    single_input = len(model.inputs) == 1
    output_names = getattr(model, "output_names", None) or [
        t._keras_history.operation.name for t in model.outputs
    ]

    try:  # a functional model built from a list of one input is called with a list (else Keras warns)
        takes_list = not single_input or isinstance(model.input, (list, tuple))
    except AttributeError:  # a Sequential model never called: it takes one tensor
        takes_list = False

    def call_all(inputs: tuple) -> list:
        outputs = model(list(inputs) if takes_list else inputs[0], training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    return LoadedModel(
        path=path,
        kind="keras",
        input_names=tuple(t.name for t in model.inputs),
        input_shapes=tuple(tuple(int(d) for d in t.shape[1:]) for t in model.inputs),
        input_dtypes=tuple(str(t.dtype) for t in model.inputs),
        output_names=tuple(output_names),
        output_sizes=tuple(int(np.prod(t.shape[1:])) for t in model.outputs),
        _call_all=call_all,
        _keras_model=model,
        output_dtypes=tuple(str(t.dtype) for t in model.outputs),
    )


_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")


# The names TensorFlow accepts as a name scope in a compiled function (its _VALID_SCOPE_NAME_REGEX).
# Keras opens a scope per layer: eagerly any name passes (the launcher's checks), but inside the
# workers' tf.function every batch failed with "'<svg onload=...>' is not a valid scope name".
_VALID_SCOPE_NAME = re.compile(r"[A-Za-z0-9_.\\/>-]*\Z")


def _check_layer_names(path: str, model) -> None:
    """Refuses a model with a layer (at any depth) whose name TensorFlow rejects as a scope."""
    stack, bad = [model], []
    while stack:
        layer = stack.pop()
        if not _VALID_SCOPE_NAME.match(layer.name):
            bad.append(layer.name)
        stack.extend(getattr(layer, "layers", ()) or ())
    if bad:
        raise ValueError(
            f"the model {path!r} has a layer named {bad[0]!r}{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}, a name "
            f"TensorFlow cannot use inside a compiled function (allowed: letters, digits and _ . - / >). Rename the layer "
            f"(rebuild the model with a valid name), or export it as a SavedModel (model.export(PATH))."
        )


def _raise_if_unknown_class(path: str, error: Exception) -> None:
    """Keras' error for a custom class it cannot find is a dump of the whole config: say it in one line."""
    match = _UNKNOWN_CLASS.search(str(error))
    if match:
        registered = re.search(rf"'registered_name': '([^']*{re.escape(match.group(1))})'", str(error))
        also = f" (registered as {registered.group(1)!r})" if registered else ""
        raise ValueError(
            f"the model {path!r} uses a custom class {match.group(1)!r}{also} that this program cannot "
            f"create: it loads Keras' built-in layers only and takes no custom objects. Rebuild the model from "
            f"built-in layers, or export it as a SavedModel (model.export(PATH)), which needs no Python classes."
        ) from None


def _check_saved_model_ops(path: str, local: str) -> None:
    with open(os.path.join(local, "saved_model.pb"), "rb") as handle:
        saved_model_pb = handle.read()
    savers = legacy_savers(saved_model_pb)
    if savers:
        raise ValueError(
            f"the SavedModel {path!r} is in TF1 format (no object graph) with a saver (MetaGraph tags {savers}): "
            f"loading it runs the saver's restore op and whatever the graph attaches to it, which the op allowlist "
            f"cannot vouch for. Re-export it in TF2 format (tf.saved_model.save, or model.export for Keras), or, only "
            f"if you trust this model, pass --unsafe-deserialization (config key 'unsafe_deserialization: true')."
        )
    found = disallowed_ops(saved_model_pb)
    if found:
        ops = ", ".join(f"{op} (in {found[op][0]})" for op in sorted(found)[:8])
        raise ValueError(
            f"the SavedModel {path!r} contains op(s) that can have side effects when called (file "
            f"writes, printing, Python calls, ...) and are not on the allowlist of side-effect-free ops: "
            f"{ops}. Only if you trust this model, pass --unsafe-deserialization (config key "
            f"'unsafe_deserialization: true')."
        )


def _load_saved_model(path: str, local: str, unsafe_deserialization: bool) -> LoadedModel:
    if not unsafe_deserialization:
        _check_saved_model_ops(path, local)
    loaded = tf.saved_model.load(local)
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"the SavedModel {path!r} has no 'serving_default' signature to explain.")
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]  # {name: TensorSpec}
    names = tuple(sorted(specs))
    outputs = signature.structured_outputs  # {name: TensorSpec}
    output_names = tuple(sorted(outputs))

    def call_all(inputs: tuple) -> list:
        result = signature(**{name: tf.cast(x, specs[name].dtype) for name, x in zip(names, inputs)})
        return [result[name] for name in output_names]

    for name in names:
        if None in specs[name].shape[1:]:
            raise ValueError(
                f"SavedModel input {name!r} has shape {specs[name].shape}; every dimension but the "
                f"batch must be fixed to attribute it."
            )
    return LoadedModel(
        path=path,
        kind="saved_model",
        input_names=names,
        input_shapes=tuple(tuple(int(d) for d in specs[n].shape[1:]) for n in names),
        input_dtypes=tuple(specs[n].dtype.name for n in names),
        output_names=output_names,
        output_sizes=tuple(int(np.prod(outputs[n].shape[1:])) for n in output_names),
        _call_all=call_all,
        _keras_model=loaded,  # kept alive: the signature's variables belong to it
        output_dtypes=tuple(outputs[n].dtype.name for n in output_names),
    )


def model_fingerprint(path: str, storage: Optional[ModelStorage] = None) -> str:
    """sha256 (hex) of the model file, or of a SavedModel directory's relative paths and contents
    (the same value `load_model` computes for the bytes it loads)."""
    storage = storage or _GFileStorage()
    digest = hashlib.sha256()
    for relative, file in _model_files(path, storage):
        digest.update(relative.encode())
        with storage.open(file) as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
