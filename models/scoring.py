"""ONNX Runtime scoring, one ``session.run`` per micro-batch.

In: an ONNX file (or its bytes, already hash-checked by the registry), its
``ModelManifest`` and assembled input columns (``{input name: [N, 1] array}``), fed
as they are (one graph input per manifest input) or, when the manifest names an
``input_tensor``, side by side as the columns of that one ``[N, k]`` float input.
Out: one float score per row; for binary classification that is P(class 1)
read from the probability tensor (ZipMap off), for regression the prediction.

The graph is checked against the manifest at load time, so a mismatched model
fails at start-up, never on the first message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.errors import ModelSignatureError, ScoringError
from models.manifest import ModelManifest

__all__ = ["OnnxScorer", "LoadedModel"]

_ORT_DTYPE = {"float32": "tensor(float)", "string": "tensor(string)"}


class OnnxScorer:
    """Scores batches with one ONNX Runtime session."""

    def __init__(
        self,
        model_path: Path,
        manifest: ModelManifest,
        intra_op_threads: int = 1,
        *,
        model_bytes: bytes | None = None,
    ) -> None:
        self.manifest = manifest
        self.model_path = Path(model_path)
        options = ort.SessionOptions()
        # Workers scale by process; one thread per session avoids oversubscription.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        source: bytes | str = model_bytes if model_bytes is not None else str(self.model_path)
        try:
            self._session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ModelSignatureError(
                manifest.name, manifest.version, [f"ONNX Runtime cannot load it: {exc}"]
            ) from exc
        self._input_names = [i.name for i in manifest.inputs]
        self._check_signature()

    def _check_signature(self) -> None:
        graph_inputs = {i.name: i for i in self._session.get_inputs()}
        if self.manifest.input_tensor is None:
            problems = self._per_input_problems(graph_inputs)
        else:
            problems = self._tensor_problems(graph_inputs, self.manifest.input_tensor)
        outputs = {o.name: o for o in self._session.get_outputs()}
        score_output = self.manifest.score_output
        if score_output not in outputs:
            problems.append(
                f'outputs.score {score_output!r} is not in the graph: set "outputs": '
                f'{{"score": ...}} to one of {sorted(outputs)}'
            )
        elif outputs[score_output].type == "seq(map(int64,tensor(float)))":
            problems.append(
                f"outputs.score {score_output!r} is a ZipMap (a list of dicts): export with "
                "skl2onnx options={id(model): {'zipmap': False}} and use the probabilities"
            )
        if problems:
            raise ModelSignatureError(self.manifest.name, self.manifest.version, problems)

    def _per_input_problems(self, graph_inputs: dict[str, ort.NodeArg]) -> list[str]:
        """One [N, 1] graph input per manifest input, named after it."""
        declared = {i.name for i in self.manifest.inputs}
        extra = sorted(set(graph_inputs) - declared)
        single = _single_matrix_input(graph_inputs)
        if single is not None and single.name not in declared:
            # The usual export (skl2onnx, XGBoost, ...): one [N, k] float input.
            width = _width(single)
            return [
                f"the graph has one 2-D float input {single.name!r} "
                f"[N, {width if width is not None else '?'}]: set "
                f'"input_tensor": "{single.name}" in the manifest, so that its inputs '
                f"({len(self.manifest.inputs)} listed) feed its columns in order"
            ]
        problems: list[str] = []
        for index, spec in enumerate(self.manifest.inputs):
            found = graph_inputs.get(spec.name)
            if found is None:
                problems.append(
                    f"inputs[{index}] input {spec.name!r} is not in the graph: name it after "
                    f"a graph input ({', '.join(sorted(graph_inputs))})"
                )
            elif found.type != _ORT_DTYPE[spec.dtype]:
                problems.append(
                    f"inputs[{index}] input {spec.name!r} is {found.type} in the graph, "
                    f'manifest says "dtype": "{spec.dtype}"'
                )
        if extra:
            problems.append(
                f"graph inputs not in the manifest: {extra}: add an input for each "
                '(or set "input_tensor" if the graph takes one [N, k] float tensor)'
            )
        return problems

    def _tensor_problems(self, graph_inputs: dict[str, ort.NodeArg], tensor: str) -> list[str]:
        """One 2-D float graph input whose columns are the manifest's inputs, in order."""
        found = graph_inputs.get(tensor)
        if found is None:
            return [
                f"input_tensor {tensor!r} is not a graph input: set it to one of "
                f"{sorted(graph_inputs)}"
            ]
        problems: list[str] = []
        others = sorted(set(graph_inputs) - {tensor})
        if others:
            problems.append(
                f"input_tensor {tensor!r}: the graph has other inputs too ({others}); "
                "with input_tensor the graph must take that one tensor only "
                "(or drop input_tensor and declare each graph input)"
            )
        if found.type != "tensor(float)":
            problems.append(
                f"input_tensor {tensor!r} is {found.type}, not tensor(float): export with "
                "a float input (skl2onnx FloatTensorType([None, k]))"
            )
        if len(found.shape) != 2:
            problems.append(
                f"input_tensor {tensor!r} has shape {found.shape}, not [N, k]: export a "
                "2-D input (skl2onnx FloatTensorType([None, k]))"
            )
        else:
            width = _width(found)
            if width is not None and width != len(self.manifest.inputs):
                problems.append(
                    f"input_tensor {tensor!r} has {width} columns but the manifest lists "
                    f"{len(self.manifest.inputs)} inputs: list exactly one input per column, "
                    "in the column order the model was trained on"
                )
        return problems

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    def score_batch(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scores for a batch, shape [N], float64; raises ScoringError naming the model."""
        try:
            if self.manifest.input_tensor is None:
                feeds = {name: columns[name] for name in self._input_names}
            else:
                matrix = np.concatenate([columns[n] for n in self._input_names], axis=1)
                feeds = {self.manifest.input_tensor: matrix}
            (raw,) = self._session.run([self.manifest.score_output], feeds)
        except Exception as exc:
            raise ScoringError(self.manifest.name, self.manifest.version, exc) from exc
        out = np.asarray(raw)
        if self.manifest.task == "binary_classification":
            out = out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)
        else:
            out = out.reshape(-1)
        return out.astype(np.float64)


def _single_matrix_input(graph_inputs: dict[str, ort.NodeArg]) -> ort.NodeArg | None:
    """The graph's only input when it is a 2-D float tensor (the usual export), else None."""
    if len(graph_inputs) != 1:
        return None
    (only,) = graph_inputs.values()
    return only if only.type == "tensor(float)" and len(only.shape) == 2 else None


def _width(arg: ort.NodeArg) -> int | None:
    """The fixed column count of a 2-D input; None when symbolic."""
    width = arg.shape[1]
    return width if isinstance(width, int) else None


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version ready to score."""

    manifest: ModelManifest
    path: Path
    scorer: OnnxScorer
