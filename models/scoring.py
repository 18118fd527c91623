"""ONNX Runtime scoring, one ``session.run`` per micro-batch.

In: an ONNX file (or its bytes, already hash-checked by the registry), its
``ModelManifest`` and assembled input columns (``{input name: [N, 1] array}``).
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
        problems: list[str] = []
        for declared in self.manifest.inputs:
            found = graph_inputs.get(declared.name)
            if found is None:
                problems.append(f"input {declared.name!r} is not in the graph")
            elif found.type != _ORT_DTYPE[declared.dtype]:
                problems.append(
                    f"input {declared.name!r} is {found.type} in the graph, "
                    f"manifest says {declared.dtype}"
                )
        extra = sorted(set(graph_inputs) - set(self._input_names))
        if extra:
            problems.append(f"graph inputs not in the manifest: {extra}")
        outputs = {o.name: o for o in self._session.get_outputs()}
        score_output = self.manifest.score_output
        if score_output not in outputs:
            problems.append(
                f"score output {score_output!r} is not in the graph (has {sorted(outputs)})"
            )
        elif outputs[score_output].type == "seq(map(int64,tensor(float)))":
            problems.append(f"output {score_output!r} is a ZipMap; export with zipmap=False")
        if problems:
            raise ModelSignatureError(self.manifest.name, self.manifest.version, problems)

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    def score_batch(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scores for a batch, shape [N], float64; raises ScoringError naming the model."""
        try:
            feeds = {name: columns[name] for name in self._input_names}
            (raw,) = self._session.run([self.manifest.score_output], feeds)
        except Exception as exc:
            raise ScoringError(self.manifest.name, self.manifest.version, exc) from exc
        out = np.asarray(raw)
        if self.manifest.task == "binary_classification":
            out = out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)
        else:
            out = out.reshape(-1)
        return out.astype(np.float64)


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version ready to score."""

    manifest: ModelManifest
    path: Path
    scorer: OnnxScorer
