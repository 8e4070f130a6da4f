"""Export: full-integer int8 LiteRT embedding model, two-input twin SavedModel.

The int8 model is calibrated with a representative set of *training*
persons' beats (never held-out ones). The twin is the cloud path of the
seed article, "two inputs in, probability out": both raw beat windows go
through the same embedding network; it returns their cosine score and the
card's logistic probability of that score.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from .model import keras, tf

log = logging.getLogger(__name__)


def to_tflite_int8(
    model: keras.Model, representative: np.ndarray, path: str | Path, seed: int = 0
) -> bytes:
    """Convert to a full-integer int8 ``.tflite`` (int8 input and output).

    Parameters
    ----------
    model : keras.Model
        The float embedding network (normalised window -> unit embedding).
    representative : ndarray (n, window_len) float32
        Normalised beats of training persons for calibration.
    path : path-like
        Where to write the model.
    """
    import tempfile

    tmp = tempfile.mkdtemp(prefix="ecgstream-export-")
    try:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        blob = _convert(conv, representative)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(path).write_bytes(blob)
    return blob


def _convert(conv, representative: np.ndarray) -> bytes:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rep = representative.astype(np.float32)

    def gen():
        for i in range(rep.shape[0]):
            yield [rep[i: i + 1]]

    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def tflite_ops(path: str | Path) -> dict:
    """Builtin ops of a ``.tflite`` and the dtypes of their tensors.

    ``float_ops`` lists ops with a float tensor: empty for a full-integer
    model (no float island).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    dt = {d["index"]: np.dtype(d["dtype"]).name for d in it.get_tensor_details()}
    ops, float_ops = set(), set()
    for d in it._get_ops_details():
        ops.add(d["op_name"])
        idx = [int(i) for i in list(d["inputs"]) + list(d["outputs"]) if int(i) >= 0]
        if any(dt.get(i, "").startswith("float") for i in idx):
            float_ops.add(d["op_name"])
    return {"ops": sorted(ops), "float_ops": sorted(float_ops)}


def save_twin(model: keras.Model, window_len: int, eps_mv: float, prob: dict, path: str | Path) -> None:
    """Write the two-input twin as a SavedModel with a ``serving_default`` signature.

    Inputs ``beat_a``, ``beat_b``: raw beat windows (n, window_len) in mV
    (``Beat.window``); the twin z-scores them itself (same formula as
    :func:`edge.preprocess.normalise_beats`). Outputs ``score``: cosine of
    the two embeddings; ``probability``: the card's logistic mapping of the
    score (calibrated for fused scores of ``prob['beats']`` beats; for a
    single pair of beats it is an indication only).
    """
    a_, b_ = float(prob["a"]), float(prob["b"])

    class Twin(tf.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def _z(self, x):
            x = tf.cast(x, tf.float64)
            mu = tf.reduce_mean(x, axis=-1, keepdims=True)
            sd = tf.maximum(tf.math.reduce_std(x, axis=-1, keepdims=True), eps_mv)
            return tf.cast((x - mu) / sd, tf.float32)

        @tf.function(input_signature=[
            tf.TensorSpec([None, window_len], tf.float32, name="beat_a"),
            tf.TensorSpec([None, window_len], tf.float32, name="beat_b"),
        ])
        def serve(self, beat_a, beat_b):
            ea = self.net(self._z(beat_a), training=False)
            eb = self.net(self._z(beat_b), training=False)
            score = tf.reduce_sum(ea * eb, axis=-1)
            return {"score": score, "probability": tf.sigmoid(a_ * score + b_)}

    twin = Twin(model)
    p = Path(path)
    if p.exists():
        shutil.rmtree(p)
    tf.saved_model.save(twin, str(p), signatures={"serving_default": twin.serve})
