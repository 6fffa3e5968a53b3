"""Which TensorFlow ops a SavedModel may contain to be loaded without --unsafe-deserialization.

Keras' safe mode covers only Keras files. A SavedModel is a graph, and a graph can do more than
arithmetic: `tf.io.write_file`, `tf.print`, `tf.py_function`, queues, file readers all run when the
model is called. So before loading one, every op of its graph is checked against an allowlist of
side-effect-free ops (math, nn, array, control flow, tensor lists, reading variables, stateless
random): the top-level nodes of every MetaGraphDef and the nodes of every function in its library.
A denylist would let any op TensorFlow adds later through.

Two places get a few more ops, because the loader needs them and the model's own functions cannot
reach them:
* the top-level graph also creates and initializes variables (VarHandleOp, AssignVariableOp);
* in a TF2 SavedModel (one MetaGraph with an object graph), the checkpoint functions named by the
  saver_def (and the nodes and functions only they reach) save and restore variables (SaveV2,
  RestoreV2, ...). TensorFlow's TF2 loader never runs them: it restores variables with a reader of
  its own and calls only functions the object graph names. So a function a signature, any other
  top-level node or the object graph (e.g. a saveable's restore function, which the loader runs)
  reaches is checked against the strict list, even when the saver reaches it too.

A TF1-format SavedModel (no object graph, or several MetaGraphs) is loaded another way:
`tf.saved_model.load` runs its saver's restore op, its init/main op and its asset initializers,
and any node can be attached to those as a control input (a SaveV2 writing files of the model's
choosing while loading, seen). There nothing is exempt: every node and function is checked against
the strict list, and one with a saver is refused outright (`legacy_savers`), because its restore op
reads and writes checkpoint files by design.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["SAFE_OPS", "disallowed_ops", "legacy_savers"]

_ARRAY = """
Const Identity IdentityN NoOp Placeholder PlaceholderWithDefault Reshape Shape ShapeN Size Rank
ExpandDims Squeeze Pack Unpack Concat ConcatV2 ConcatOffset Split SplitV Slice StridedSlice
StridedSliceGrad Tile Transpose ConjugateTranspose Gather GatherV2 GatherNd ScatterNd
TensorScatterUpdate TensorScatterAdd TensorScatterSub TensorScatterMax TensorScatterMin Pad PadV2
MirrorPad MirrorPadGrad Fill ZerosLike OnesLike Range LinSpace Cast Bitcast BroadcastTo BroadcastArgs
BroadcastGradientArgs Reverse ReverseV2 Where Select SelectV2 OneHot StopGradient PreventGradient
Snapshot CheckNumerics CheckNumericsV2 EnsureShape SpaceToDepth DepthToSpace SpaceToBatchND
BatchToSpaceND SpaceToBatch BatchToSpace MatrixBandPart MatrixDiag MatrixDiagV2 MatrixDiagV3
MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3 Diag
DiagPart InvertPermutation Unique UniqueV2 TopKV2 ArgMax ArgMin Cumsum Cumprod CumulativeLogsumexp
Einsum Roll LowerBound UpperBound Bucketize ClipByValue DynamicStitch ParallelDynamicStitch
DynamicPartition SegmentSum SegmentMean SegmentMax SegmentMin SegmentProd UnsortedSegmentSum
UnsortedSegmentMax UnsortedSegmentMin UnsortedSegmentProd SparseSegmentSum SparseSegmentMean
SparseSegmentSqrtN ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea
ResizeBilinearGrad ResizeNearestNeighborGrad ExtractImagePatches ExtractVolumePatches
ListDiff SetSize ReverseSequence Substr
"""
_MATH = """
Add AddV2 AddN Sub Mul MulNoNan Div DivNoNan RealDiv FloorDiv FloorMod TruncateDiv TruncateMod Mod
Maximum Minimum Neg Abs Sign Square Sqrt Rsqrt Reciprocal Inv Exp Expm1 Log Log1p Pow
SquaredDifference Sin Cos Tan Tanh Sinh Cosh Asin Acos Atan Atan2 Asinh Acosh Atanh Erf Erfc Erfinv
Ndtri Lgamma Digamma Igamma Igammac Betainc Zeta Polygamma Floor Ceil Round Rint Sigmoid Softplus
Softsign MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 SparseMatMul Sum Prod Mean Max Min All Any
EuclideanNorm Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot
IsNan IsInf IsFinite Xlogy Xdivy Xlog1py ApproximateEqual Real Imag Conj Angle ComplexAbs Complex
BitwiseAnd BitwiseOr BitwiseXor LeftShift RightShift Invert PopulationCount Cross Cholesky
MatrixInverse MatrixDeterminant LogMatrixDeterminant MatrixSolve MatrixTriangularSolve
MatrixSolveLs Qr Svd SelfAdjointEigV2 MatrixExponential MatrixLogarithm TanhGrad SigmoidGrad
RsqrtGrad SqrtGrad ReciprocalGrad InvGrad
"""
_NN = """
BiasAdd BiasAddV1 BiasAddGrad Relu Relu6 Elu Selu LeakyRelu Softmax LogSoftmax ReluGrad Relu6Grad
EluGrad SeluGrad LeakyReluGrad SoftplusGrad SoftsignGrad Conv2D Conv3D Conv2DBackpropInput
Conv2DBackpropFilter Conv3DBackpropInputV2 Conv3DBackpropFilterV2 DepthwiseConv2dNative
DepthwiseConv2dNativeBackpropInput DepthwiseConv2dNativeBackpropFilter MaxPool MaxPoolV2 MaxPool3D
AvgPool AvgPool3D MaxPoolGrad MaxPoolGradV2 MaxPool3DGrad AvgPoolGrad AvgPool3DGrad
MaxPoolWithArgmax MaxPoolGradWithArgmax FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3
FusedBatchNormGrad FusedBatchNormGradV2 FusedBatchNormGradV3 LRN LRNGrad L2Loss Dilation2D
SoftmaxCrossEntropyWithLogits SparseSoftmaxCrossEntropyWithLogits InTopKV2 _FusedConv2D
_FusedMatMul _FusedBatchNormEx
"""
_CONTROL_FLOW = """
If StatelessIf While StatelessWhile Case StatelessCase PartitionedCall StatefulPartitionedCall
Switch Merge Enter Exit NextIteration LoopCond ControlTrigger Assert
"""
# Lists of tensors held in memory by loops (Keras LSTM/GRU/RNN layers export these).
_TENSOR_LISTS = """
EmptyTensorList TensorListReserve TensorListFromTensor TensorListGetItem TensorListSetItem
TensorListStack TensorListLength TensorListElementShape TensorListPushBack TensorListPopBack
TensorListConcatV2 TensorListSplit TensorListGather TensorListScatterIntoExistingList
TensorListResize TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3 TensorArrayGatherV3
TensorArrayScatterV3 TensorArraySizeV3 TensorArrayConcatV3 TensorArraySplitV3
"""
# Reading variables (the model's weights); writing them is left to the loader (see module doc).
_VARIABLE_READS = """
VarHandleOp ReadVariableOp VarIsInitializedOp ResourceGather ResourceGatherNd VariableShape
DestroyResourceOp
"""
# Deterministic given their seed argument: the same inputs give the same outputs.
_STATELESS_RANDOM = """
StatelessRandomUniform StatelessRandomUniformV2 StatelessRandomNormal StatelessRandomNormalV2
StatelessTruncatedNormal StatelessTruncatedNormalV2 StatelessRandomUniformInt
StatelessRandomUniformIntV2 StatelessRandomGetKeyCounter StatelessRandomGetKeyCounterAlg
StatelessRandomGetAlg
"""

SAFE_OPS: frozenset[str] = frozenset(
    " ".join((_ARRAY, _MATH, _NN, _CONTROL_FLOW, _TENSOR_LISTS, _VARIABLE_READS, _STATELESS_RANDOM)).split()
)
_TOP_LEVEL_OPS = SAFE_OPS | {"AssignVariableOp", "VariableV2", "Variable", "Assign"}
_CHECKPOINT_OPS = _TOP_LEVEL_OPS | {
    "SaveV2", "SaveSlices", "Save", "RestoreV2", "Restore", "RestoreSlice", "MergeV2Checkpoints",
    "ShardedFilename", "ShardedFilespec", "StringJoin", "StaticRegexFullMatch", "DisableCopyOnRead",
}


def _parse(saved_model_pb: bytes):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(saved_model_pb)
    return saved_model


def _is_tf2(saved_model) -> bool:
    """Whether tf.saved_model.load takes its TF2 path (load.py: one MetaGraph with an object graph)."""
    return len(saved_model.meta_graphs) == 1 and saved_model.meta_graphs[0].HasField("object_graph_def")


def disallowed_ops(saved_model_pb: bytes) -> dict[str, list[str]]:
    """{op type: [where it occurs, ...]} for every op outside the allowlists (see the module).
    `saved_model_pb`: the bytes of a SavedModel's saved_model.pb. Empty when all are allowed."""
    saved_model = _parse(saved_model_pb)
    tf2 = _is_tf2(saved_model)
    found: dict[str, list[str]] = {}
    for meta_graph in saved_model.meta_graphs:
        for op, where in _meta_graph_violations(meta_graph, tf2):
            found.setdefault(op, []).append(where)
    return found


def legacy_savers(saved_model_pb: bytes) -> list[str]:
    """The tags of a TF1-format SavedModel's MetaGraphs that carry a saver (whose restore op the
    loader runs); [] for a TF2 SavedModel."""
    saved_model = _parse(saved_model_pb)
    if _is_tf2(saved_model):
        return []
    return [",".join(m.meta_info_def.tags) or "(untagged)" for m in saved_model.meta_graphs if m.saver_def.restore_op_name]


def _meta_graph_violations(meta_graph, tf2: bool) -> Iterable[tuple[str, str]]:
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    saver_nodes = _saver_only_nodes(meta_graph) if tf2 else set()
    strict_roots = [n for n in graph.node if n.name not in saver_nodes]
    strict = _reachable_functions(strict_roots, functions, _object_graph_functions(meta_graph))
    for node in graph.node:
        allowed = _CHECKPOINT_OPS if node.name in saver_nodes else _TOP_LEVEL_OPS
        if node.op not in allowed and node.op not in functions:
            yield node.op, f"node {node.name!r}"
    checkpoint = _reachable_functions([n for n in graph.node if n.name in saver_nodes], functions) - strict
    for name, function in functions.items():
        allowed = _CHECKPOINT_OPS if name in checkpoint else SAFE_OPS
        for node in function.node_def:
            if node.op not in allowed and node.op not in functions:
                yield node.op, f"function {name!r}"


def _object_graph_functions(meta_graph) -> list[str]:
    """Functions the object graph names (the TF2 loader may call any of them)."""
    objects = meta_graph.object_graph_def
    names = list(objects.concrete_functions)
    for node in objects.nodes:
        kind = node.WhichOneof("kind")
        if kind == "function":
            names.extend(node.function.concrete_functions)
        elif kind == "bare_concrete_function":
            names.append(node.bare_concrete_function.concrete_function_name)
    return names


def _input_name(text: str) -> str:
    return text.lstrip("^").split(":", 1)[0]


def _ancestors(graph, roots: Iterable[str]) -> set[str]:
    nodes = {n.name: n for n in graph.node}
    seen: set[str] = set()
    stack = [r for r in roots if r in nodes]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(i for i in (_input_name(t) for t in nodes[name].input) if i in nodes)
    return seen


def _saver_only_nodes(meta_graph) -> set[str]:
    """Top-level nodes that only the checkpoint (saver_def) uses, not any signature."""
    saver = meta_graph.saver_def
    saver_roots = [_input_name(t) for t in (saver.save_tensor_name, saver.restore_op_name, saver.filename_tensor_name) if t]
    signature_roots = [
        _input_name(t.name)
        for signature in meta_graph.signature_def.values()
        for t in (*signature.inputs.values(), *signature.outputs.values())
    ]
    return _ancestors(meta_graph.graph_def, saver_roots) - _ancestors(meta_graph.graph_def, signature_roots)


def _called(node) -> list[str]:
    """Functions a node calls: its op (a function called by name) and function-valued attributes."""
    names = [node.op]
    for attr in node.attr.values():
        if attr.HasField("func"):
            names.append(attr.func.name)
        names.extend(f.name for f in attr.list.func)
    return names


def _reachable_functions(nodes, functions: dict, roots: Iterable[str] = ()) -> set[str]:
    """Functions called from `nodes`, or named in `roots`, and every function they call."""
    seen: set[str] = set()
    stack = [name for node in nodes for name in _called(node) if name in functions]
    stack += [name for name in roots if name in functions]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(c for node in functions[name].node_def for c in _called(node) if c in functions)
    return seen
