"""Splitting a Keras model at layers, for attributions at a layer's output (no Beam import).

A model F whose input is token ids, category ids or strings has no gradient with respect to that
input. Its attributions are taken at the output of a layer L downstream of it instead (an
Embedding, a one-hot CategoryEncoding), as Captum's `LayerIntegratedGradients` does:

    F(x) = upper(lower(x), x_kept)
    lower:  the model's inputs that feed L        -> a = L's output, float (B, *layer_shape)
    upper:  (a, the inputs the rest still reads)  -> F's explained output (B, ...)

The lower part runs once per batch; every attribution method runs unchanged on `upper`, with the
activations `a` in the place of inputs (path points, noise and references are taken at the layer).
An attribution of an (B, T, D) activation is then summed over its last axis (the embedding or
one-hot dimension) to one value per position, (B, T), and completeness holds at the layer:

    sum_t attr_t = upper(a) - upper(a_baseline)   (up to the quadrature error)

`split_model` is generic: any layer with one output, fed (through any layers) by exactly one model
input, whose downstream part reads no other non-float input. Keras 3 builds a functional model
from intermediate tensors, so `upper` is a `keras.Model` whose inputs are the layer outputs.
Also here: `default_layers` (the first float layer after each id/string input, from the graph),
`layer_output_for_id` (the baseline 'id:N'), `token_lookup` (the model's own vocabulary token at
each position), `id_range` (the ids an Embedding/CategoryEncoding takes), `reduce_to_positions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = [
    "LayerSplit", "split_model", "default_layers", "reduce_to_positions", "is_float_dtype", "vocabulary_layer",
    "id_range", "layer_output_for_id", "TokenLookup", "token_lookup",
]

# Lookup layers that hold a vocabulary: in 'int' mode their output is each position's vocabulary index.
_VOCABULARY_LAYERS = ("StringLookup", "IntegerLookup", "TextVectorization")


def is_float_dtype(dtype: Any) -> bool:
    name = str(getattr(dtype, "name", dtype))
    return "float" in name or name in ("half", "bfloat16")


@dataclass(frozen=True)
class LayerSplit:
    """A model split at one or more layers (see the module docstring).

    layer_names:       the layers, in the order given; one activation each.
    replaced_inputs:   per layer, the name of the one model input it stands for.
    kept_inputs:       names of the model inputs the upper part still reads (in model order).
    lower_inputs:      names of the model inputs the lower part reads (in model order).
    activation_shapes: per layer, its output's shape without the batch dimension, e.g. (T, D).
    lower(inputs) -> activations: inputs is a tuple, one array per name of `lower_inputs`, each
      (B, *input_shape) (numbers are cast to the input's dtype; strings as str/bytes); returns one
      float32 (B, *activation_shape) tensor per layer.
    upper(inputs) -> output: inputs is a tuple of the activations followed by the kept inputs,
      each (B, *shape) float32; returns the explained output (B, ...). Called with training=False.
    """

    layer_names: tuple[str, ...]
    replaced_inputs: tuple[str, ...]
    kept_inputs: tuple[str, ...]
    lower_inputs: tuple[str, ...]
    activation_shapes: tuple[tuple[int, ...], ...]
    lower: Callable[[tuple], tuple]
    upper: Callable[[tuple], Any]
    lower_model: Any = None
    upper_model: Any = None


def _producer(tensor) -> tuple[Any, Any]:
    """(operation, node) that produced a KerasTensor."""
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def _ancestors(outputs: Sequence[Any], stop: Sequence[Any] = ()) -> tuple[set[int], list[Any]]:
    """Ids of every tensor `outputs` depend on (walking back through the graph, not past a tensor
    of `stop`), and the source tensors reached (tensors no layer produced: the model inputs)."""
    stop_ids = {id(t) for t in stop}
    seen: set[int] = set()
    sources: list[Any] = []
    pending = list(outputs)
    while pending:
        tensor = pending.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) in stop_ids:
            continue
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            sources.append(tensor)
            continue
        operation, node = _producer(tensor)
        parents = list(node.arguments.keras_tensors)
        if not parents:
            sources.append(tensor)  # an InputLayer's tensor
        pending.extend(parents)
    return seen, sources


def _graph_nodes(model) -> list[Any]:
    """Every node (a layer's call) on the model's graph, walking back from its outputs. A layer's
    `_inbound_nodes` also holds calls outside this graph (a Sequential model builds its layers
    more than once), so only these count."""
    nodes, seen, pending = [], set(), list(model.outputs)
    while pending:
        tensor = pending.pop()
        if id(tensor) in seen or getattr(tensor, "_keras_history", None) is None:
            continue
        seen.add(id(tensor))
        _, node = _producer(tensor)
        if all(node is not n for n in nodes):
            nodes.append(node)
        pending.extend(node.arguments.keras_tensors)
    return nodes


def _layer_output(model, name: str):
    """The single output tensor of layer `name` of `model` (ValueError when it has none or several)."""
    names = [layer.name for layer in model.layers]
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"layer {name!r} is not a layer of the model.{hint} Its layers are {names}; pass one of them with "
            f"--layer NAME (config key 'layers')."
        )
    layer = model.get_layer(name)
    nodes = [n for n in _graph_nodes(model) if n.operation is layer]
    if len(nodes) != 1 or len(nodes[0].outputs) != 1:
        raise ValueError(
            f"layer {name!r} is called {len(nodes)} times or has {len(nodes[0].outputs) if nodes else 0} outputs in "
            f"the model; attributions at a layer need a layer called once with one output. Pick a layer "
            f"that is not shared (e.g. the one after it)."
        )
    return nodes[0].outputs[0]


def split_model(model, layer_names: Sequence[str], output=None) -> LayerSplit:
    """Splits a functional or Sequential Keras model at the outputs of `layer_names`.

    model: a built Keras functional/Sequential model (not a SavedModel: it has no layer graph).
    output: the KerasTensor to explain (default: the model's only output, or its first); e.g. the
      input of a final softmax to explain logits.
    Raises ValueError (what, the value seen, how to fix) when a layer is unknown, shared, not
    float, fed by several model inputs or by none, or when a non-float model input still reaches
    the output other than through the given layers.
    """
    import keras

    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            f"attributions at a layer need a Keras functional or Sequential model, got {type(model).__name__} "
            f"(a SavedModel has no layer graph to split). Save the model as .keras and pass that file."
        )
    layer_names = tuple(dict.fromkeys(layer_names))
    if not layer_names:
        raise ValueError("split_model needs at least one layer name.")
    output = model.outputs[0] if output is None else output
    inputs = list(model.inputs)
    input_names = [t.name for t in inputs]
    activations = []
    replaced = []
    for name in layer_names:
        tensor = _layer_output(model, name)
        if not is_float_dtype(tensor.dtype):
            raise ValueError(
                f"layer {name!r} outputs {tensor.dtype} values; attributions at a layer need a float output "
                f"(e.g. an Embedding or a one-hot CategoryEncoding after a lookup). Pick a layer further down."
            )
        _, sources = _ancestors([tensor])
        fed_by = [input_names[i] for i, t in enumerate(inputs) if any(s is t for s in sources)]
        if len(fed_by) != 1:
            raise ValueError(
                f"layer {name!r} is fed by {len(fed_by)} model inputs {fed_by}; an attribution at a layer stands for "
                f"exactly one input's positions. Pick a layer that only one input reaches (e.g. that input's own "
                f"Embedding), or one --layer per input."
            )
        if fed_by[0] in replaced:
            other = layer_names[replaced.index(fed_by[0])]
            raise ValueError(
                f"layers {other!r} and {name!r} both stand for model input {fed_by[0]!r}; give one layer per input."
            )
        activations.append(tensor)
        replaced.append(fed_by[0])
    reached, _ = _ancestors([output], stop=activations)
    if not all(id(a) in reached for a in activations):
        missing = [n for n, a in zip(layer_names, activations) if id(a) not in reached]
        raise ValueError(f"layer(s) {missing} do not lead to the explained output; pick layers on its path.")
    kept = [t for t in inputs if id(t) in reached]
    for tensor in kept:
        if not is_float_dtype(tensor.dtype):
            via = f" through layers {list(layer_names)}" if layer_names else ""
            raise ValueError(
                f"model input {tensor.name!r} ({tensor.dtype}) reaches the output other than{via}; its values have no "
                f"gradient there. Add --layer for the first float layer after it (e.g. its Embedding), so that "
                f"every path from it to the output goes through a chosen layer."
            )
    lower_needed = {id(s) for a in activations for s in _ancestors([a])[1]}
    lower_inputs = [t for t in inputs if id(t) in lower_needed]
    lower_model = keras.Model(lower_inputs, activations)
    upper_model = keras.Model(activations + kept, output)
    lower_dtypes = [str(t.dtype) for t in lower_inputs]

    def lower(values: tuple) -> tuple:
        result = lower_model([_tensor(v, d) for v, d in zip(values, lower_dtypes)], training=False)
        return tuple(result) if isinstance(result, (list, tuple)) else (result,)

    def upper(values: tuple):
        result = upper_model([_tensor(v) for v in values], training=False)
        return result[0] if isinstance(result, (list, tuple)) else result

    return LayerSplit(
        layer_names=layer_names,
        replaced_inputs=tuple(replaced),
        kept_inputs=tuple(t.name for t in kept),
        lower_inputs=tuple(t.name for t in lower_inputs),
        activation_shapes=tuple(tuple(int(d) for d in a.shape[1:]) for a in activations),
        lower=lower,
        upper=upper,
        lower_model=lower_model,
        upper_model=upper_model,
    )


def _tensor(value, dtype: Optional[str] = None):
    """A tf.Tensor of `value`, cast to `dtype` when given (ids arrive as int64, inputs take int32)."""
    import tensorflow as tf

    tensor = value if tf.is_tensor(value) else tf.convert_to_tensor(value)
    if dtype is not None and dtype != "string" and tensor.dtype != dtype:
        tensor = tf.cast(tensor, dtype)
    return tensor


def default_layers(model) -> dict[str, str]:
    """For each non-float input of `model` (integer ids, strings): the first layer downstream of
    it whose output is float (an Embedding, a one-hot CategoryEncoding), found by walking the
    graph forward from the input. {input name: layer name}; float inputs are left out.

    Raises ValueError when such an input reaches no float layer fed by it alone.
    """
    import keras

    consumers: dict[int, list[tuple[Any, Any]]] = {}  # tensor id -> [(layer, its output)]
    for node in _graph_nodes(model):
        for tensor in node.arguments.keras_tensors:
            consumers.setdefault(id(tensor), []).extend((node.operation, out) for out in node.outputs)
    found = {}
    for tensor in model.inputs:
        if is_float_dtype(tensor.dtype):
            continue
        frontier, seen, choice = [tensor], set(), None
        while frontier and choice is None:  # breadth first: the nearest float layer
            following = []
            for t in frontier:
                for layer, out in consumers.get(id(t), []):
                    if id(out) in seen:
                        continue
                    seen.add(id(out))
                    # a Layer (what --layer can name; not a bare op such as keras.ops.cast) with a
                    # float output that this input alone feeds
                    if isinstance(layer, keras.layers.Layer) and is_float_dtype(out.dtype) and len(_ancestors([out])[1]) == 1:
                        choice = layer.name
                        break
                    following.append(out)
                if choice is not None:
                    break
            frontier = following
        if choice is None:
            raise ValueError(
                f"model input {tensor.name!r} has dtype {tensor.dtype} and no layer downstream of it, fed by it alone, "
                f"has a float output (an Embedding, a one-hot CategoryEncoding) at which to attribute it. Name one with "
                f"--layer NAME, or feed the model float inputs."
            )
        found[tensor.name] = choice
    return found


def vocabulary_layer(model, layer_name: str) -> Optional[tuple[Any, Any]]:
    """(lookup layer, its output tensor) of the last StringLookup/IntegerLookup/TextVectorization on
    the path to `layer_name`'s output, or None: its output holds the vocabulary index of each
    position, so `get_vocabulary()[index]` is the token there."""
    target = _layer_output(model, layer_name)
    pending, seen = [target], set()
    while pending:
        tensor = pending.pop(0)
        if id(tensor) in seen or getattr(tensor, "_keras_history", None) is None:
            continue
        seen.add(id(tensor))
        operation, node = _producer(tensor)
        if type(operation).__name__ in _VOCABULARY_LAYERS:
            return operation, tensor
        pending.extend(node.arguments.keras_tensors)
    return None


# Layers that move values without changing them: ids seen through them are the input's ids.
_VALUE_PRESERVING = ("Reshape", "Flatten", "Permute", "RepeatVector", "Identity")


def id_range(model, layer_name: str) -> Optional[int]:
    """N when `layer_name` takes a model input's ids in [0, N) (an Embedding's input_dim, a
    CategoryEncoding's num_tokens), reading the input directly or through layers that only move
    values (Reshape, Flatten, ...); None otherwise (e.g. after a lookup layer, which maps unknown
    values to its out-of-vocabulary index itself)."""
    layer = model.get_layer(layer_name)
    kind = type(layer).__name__
    if kind not in ("Embedding", "CategoryEncoding"):
        return None
    node = [n for n in _graph_nodes(model) if n.operation is layer][0]
    parents = node.arguments.keras_tensors
    while len(parents) == 1 and not any(parents[0] is t for t in model.inputs):
        if getattr(parents[0], "_keras_history", None) is None:
            return None
        operation, producer = _producer(parents[0])
        if type(operation).__name__ not in _VALUE_PRESERVING:
            return None
        parents = producer.arguments.keras_tensors
    if len(parents) != 1:
        return None
    return int(layer.input_dim) if kind == "Embedding" else int(layer.num_tokens)


def reduce_to_positions(attribution: np.ndarray) -> np.ndarray:
    """(B, *positions, D) attribution at a layer's output -> (B, *positions), summed over the last
    axis (the embedding / one-hot dimension: Captum's convention for layer attributions). A (B, D)
    output (one position) gives (B, 1)."""
    attribution = np.asarray(attribution)
    summed = attribution.sum(axis=-1, dtype=np.float64)  # (B, *positions)
    if summed.ndim == 1:
        summed = summed[:, None]  # (B, 1)
    return summed.astype(np.float32)


def _ids_tensor(model, layer_name: str):
    """The integer ids the layer's output is computed from: the output of a lookup layer on the
    way (StringLookup, IntegerLookup, TextVectorization in 'int' mode), else the integer model
    input that feeds the layer; None when there is neither."""
    found = vocabulary_layer(model, layer_name)
    if found is not None:
        return found[1] if "int" in str(found[1].dtype) else None
    _, sources = _ancestors([_layer_output(model, layer_name)])
    ints = [t for t in model.inputs if any(s is t for s in sources) and "int" in str(t.dtype)]
    return ints[0] if len(ints) == 1 else None


def layer_output_for_id(model, layer_name: str, index: int) -> np.ndarray:
    """The layer's output, float32 (1, *activation_shape), when the ids it is computed from are
    `index` at every position (the baseline 'id:N': e.g. N = 0, the padding id, everywhere).
    Runs only the layers between those ids and the layer. Raises ValueError when the layer is not
    computed from integer ids, or the id is outside what the layers there take."""
    import keras

    ids = _ids_tensor(model, layer_name)
    if ids is None:
        raise ValueError(
            f"the baseline 'id:{index}' needs layer {layer_name!r} to be computed from integer ids (an integer model "
            f"input or a StringLookup/IntegerLookup/TextVectorization output), and it is not; use the zeros baseline."
        )
    part = keras.Model(ids, _layer_output(model, layer_name))
    values = np.full((1, *[int(d) for d in ids.shape[1:]]), index, dtype=str(ids.dtype))
    try:
        out = part(values, training=False)
    except Exception as error:  # TensorFlow's InvalidArgumentError for an id outside an embedding's range
        raise ValueError(
            f"the baseline 'id:{index}' cannot be computed at layer {layer_name!r}: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0]}. Use an id the layer takes (e.g. 'id:0' for padding) or 'zeros'."
        ) from None
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class TokenLookup:
    """The token at each position of a layer's output, from the model's own vocabulary.

    inputs: names of the model inputs `tokens` reads; vocabulary: str (V,), index -> token.
    tokens(values) -> object (B, positions) of str: values one array per name of `inputs`;
    token_ids(values) -> int64 (B, positions), the vocabulary index of each.
    """

    inputs: tuple[str, ...]
    vocabulary: np.ndarray
    ids: Callable[[tuple], Any]

    def token_ids(self, values: tuple) -> np.ndarray:
        """int64 (B, positions): the vocabulary index at each position."""
        ids = np.asarray(self.ids([_tensor(v) for v in values]))  # (B, *positions)
        return ids.reshape(len(ids), -1).astype(np.int64)

    def tokens(self, values: tuple) -> np.ndarray:
        ids = self.token_ids(values)  # (B, positions)
        known = (ids >= 0) & (ids < len(self.vocabulary))
        return np.where(known, self.vocabulary[np.clip(ids, 0, len(self.vocabulary) - 1)], "")


def token_lookup(model, layer_name: str) -> Optional[TokenLookup]:
    """A TokenLookup for the layer when a vocabulary layer in 'int' mode lies on its path and its
    ids line up with the layer's positions ((B, T) ids for a (B, T, D) output); else None."""
    import keras

    found = vocabulary_layer(model, layer_name)
    output = _layer_output(model, layer_name)
    if found is None or "int" not in str(found[1].dtype):
        return None
    layer, ids = found
    if list(ids.shape[1:]) != list(output.shape[1:-1]) and not (len(output.shape) == 2 and list(ids.shape[1:]) in ([], [1])):
        return None
    _, sources = _ancestors([ids])
    inputs = [t for t in model.inputs if any(s is t for s in sources)]
    vocabulary = np.array([str(v) for v in layer.get_vocabulary()], dtype=object)
    part = keras.Model(inputs, ids)
    return TokenLookup(tuple(t.name for t in inputs), vocabulary, lambda values: part(values, training=False))
