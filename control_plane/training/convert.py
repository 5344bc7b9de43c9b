"""Conversion of the two fitted pipelines into one self-contained ONNX graph.

Each pipeline is converted on its own, its names are prefixed, and the nodes of both
are joined into one graph that shares the six reading inputs and has two outputs.
"""

from __future__ import annotations

import logging
import warnings

import onnx
from onnx import ModelProto, compose, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
from sklearn.pipeline import Pipeline

from control_plane.training.features import register_converter
from control_plane.training.trees import register_tree_converter
from edge_agent.reading import MEASUREMENT_FIELDS

logger = logging.getLogger(__name__)

FAILURE_OUTPUT = "failure_probabilities"
FAILURE_TYPE_OUTPUT = "failure_type_probabilities"
_FAILURE_PREFIX = "failure_"
_FAILURE_TYPE_PREFIX = "failure_type_"

# skl2onnx names a classifier's outputs "label" and "probabilities" (with
# zipmap=False); these prefixes turn the latter into the two output names above.

# One input per reading field, shape [None, 1], as the edge agent feeds them. The
# measurements are float64, the precision the readings arrive in.
INITIAL_TYPES = [
    ("product_type", StringTensorType([None, 1])),
    *((name, DoubleTensorType([None, 1])) for name in MEASUREMENT_FIELDS),
]


class ConversionError(RuntimeError):
    """The pipelines could not be converted into the graph the scorer expects."""


def convert_pipeline(pipeline: Pipeline) -> ModelProto:
    """Convert one fitted pipeline with plain probability tensors (no ZipMap)."""
    register_converter()
    register_tree_converter()
    classifier = pipeline.steps[-1][1]
    try:
        with warnings.catch_warnings():
            # skl2onnx 1.20 passes the HistGradientBoosting converter's
            # nodes_missing_value_tracks_true as booleans. Protobuf 6.33 stores them
            # as the integers 0 and 1, as intended, but warns that protobuf 7 will
            # reject them, and pytest turns that warning into an error.
            warnings.filterwarnings(
                "ignore",
                message=r".*Expected an int, got a boolean",
                category=DeprecationWarning,
            )
            return convert_sklearn(
                pipeline,
                initial_types=INITIAL_TYPES,
                options={id(classifier): {"zipmap": False}},
            )
    except Exception as exc:  # skl2onnx raises many unrelated types
        raise ConversionError(f"skl2onnx cannot convert {classifier!r}: {exc}") from exc


def convert_models(failure: Pipeline, failure_type: Pipeline, *, version: int) -> bytes:
    """Convert both heads and merge them into one serialized ONNX model.

    Args:
        failure: the fitted binary pipeline.
        failure_type: the fitted multi-class pipeline.
        version: the model version, stored in the graph's metadata.

    Raises:
        ConversionError: a conversion failed or the merged graph is invalid.
    """
    merged = merge_heads(convert_pipeline(failure), convert_pipeline(failure_type))
    helper.set_model_props(merged, {"edgepm_model_version": str(version)})
    try:
        onnx.checker.check_model(merged, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"merged ONNX graph is invalid: {exc}") from exc
    return merged.SerializeToString()


def merge_heads(failure: ModelProto, failure_type: ModelProto) -> ModelProto:
    """Join two converted heads that take the same inputs into one graph.

    Raises:
        ConversionError: the heads' inputs or opsets differ.
    """
    first = compose.add_prefix(failure, _FAILURE_PREFIX, rename_inputs=False)
    second = compose.add_prefix(failure_type, _FAILURE_TYPE_PREFIX, rename_inputs=False)
    if [str(i) for i in first.graph.input] != [str(i) for i in second.graph.input]:
        raise ConversionError("the two heads were converted with different inputs")
    opsets = {entry.domain: entry.version for entry in first.opset_import}
    for entry in second.opset_import:
        if opsets.setdefault(entry.domain, entry.version) != entry.version:
            raise ConversionError(
                f"the heads use opset {opsets[entry.domain]} and {entry.version} of "
                f"domain {entry.domain!r}; convert both with one target_opset"
            )

    outputs = [
        _output(first, FAILURE_OUTPUT),
        _output(second, FAILURE_TYPE_OUTPUT),
    ]
    nodes, initializers = _prune(
        [*first.graph.node, *second.graph.node],
        [*first.graph.initializer, *second.graph.initializer],
        {output.name for output in outputs},
    )
    graph = helper.make_graph(
        nodes, "edgepm", list(first.graph.input), outputs, initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
        producer_name="edgepm",
    )
    model.ir_version = max(first.ir_version, second.ir_version)
    return model


def _output(model: ModelProto, name: str) -> onnx.ValueInfoProto:
    for output in model.graph.output:
        if output.name == name:
            return output
    names = [output.name for output in model.graph.output]
    raise ConversionError(f"converted head has no output {name!r} (has {names})")


def _prune(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    outputs: set[str],
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Drop the nodes and initializers that no kept output depends on (e.g. labels)."""
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    # Converter output is topologically sorted, so one backward pass finds every
    # producer of a needed value.
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    return kept, [tensor for tensor in initializers if tensor.name in needed]
