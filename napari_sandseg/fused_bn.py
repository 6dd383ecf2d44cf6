"""Batch normalisation as one fused TensorFlow op, for the engine's own training and prediction.

Keras 3's ``BatchNormalization`` computes the moments and the normalisation as separate
element-wise ops, and under mixed bfloat16 it first casts every activation to float32. On a
CPU those passes over memory cost as much as the bfloat16 convolutions save. TensorFlow's
``FusedBatchNormV3`` (a single oneDNN kernel, bfloat16 in and out with float32 statistics)
does the same arithmetic in one pass: on the 2-core benchmark machine it raised Unet-resnet34
bfloat16 training from about 35 to about 42 images/s (``benchmarks/throughput.py``).

:class:`FusedBatchNormalization` is a drop-in subclass with the same weights and the same
results (the moving variance is kept biased, as Keras does; see the tests). The engine's
``build_model`` and ``load_model`` swap it in (:func:`fused_copy`) and ``save_model`` swaps it
back (:func:`plain_config`), so saved ``.keras`` files hold only standard Keras layers and load
anywhere Keras and segmentation-models do.
"""

from __future__ import annotations

from typing import Any

#: Name under which the fused layer is registered with Keras (package>name).
REGISTERED_NAME = "napari_sandseg>FusedBatchNormalization"
_PLAIN = "BatchNormalization"
_FUSED = "FusedBatchNormalization"

_layer_class: Any = None


def layer_class() -> Any:
    """The :class:`FusedBatchNormalization` Keras layer class (defined on first use, after TF loads)."""
    global _layer_class
    if _layer_class is None:
        _layer_class = _define()
    return _layer_class


def _define() -> Any:
    from ._tf import keras as _keras_module
    from ._tf import tf as _tf_module

    keras, tf = _keras_module(), _tf_module()

    @keras.saving.register_keras_serializable(package="napari_sandseg", name=_FUSED)
    class FusedBatchNormalization(keras.layers.BatchNormalization):
        """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

        Falls back to the Keras computation for what the fused op does not cover: masks,
        batch renormalisation, synchronised (multi-replica) statistics, a channel axis other
        than the last, inputs that are not 4-D, and layers without both scale and centre.
        """

        def _fusable(self, inputs: Any, mask: Any) -> bool:
            return (
                mask is None
                and len(inputs.shape) == 4
                and self.axis in (-1, 3)
                and not self.renorm
                and not getattr(self, "synchronized", False)
                and self.scale
                and self.center
            )

        def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:  # noqa: D102
            if not self._fusable(inputs, mask):
                return super().call(inputs, training=training, mask=mask)
            gamma = tf.cast(self.gamma, tf.float32)
            beta = tf.cast(self.beta, tf.float32)
            if training and self.trainable:
                y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                    inputs, gamma, beta, epsilon=self.epsilon, is_training=True, data_format="NHWC"
                )
                # The fused op returns the Bessel-corrected variance; Keras keeps the biased one.
                n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
                variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
            else:
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                    inputs, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                    variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                    is_training=False, data_format="NHWC",
                )
            return tf.cast(y, self.compute_dtype)

    return FusedBatchNormalization


def custom_objects() -> dict[str, Any]:
    """``custom_objects`` for ``from_config`` on a config holding fused batch norms."""
    return {_FUSED: layer_class()}


def _swap_class(obj: Any, old: str, new: str, registered: str | None) -> Any:
    """A Keras config with every layer of class ``old`` turned into class ``new``."""
    if isinstance(obj, list):
        return [_swap_class(v, old, new, registered) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {key: _swap_class(value, old, new, registered) for key, value in obj.items()}
    if obj.get("class_name") == old and isinstance(obj.get("config"), dict):
        out["class_name"] = new
        out["registered_name"] = registered
        out["module"] = None if registered else "keras.layers"
    return out


def fused_config(config: dict[str, Any]) -> dict[str, Any]:
    """Model config with every ``BatchNormalization`` layer made a :class:`FusedBatchNormalization`."""
    return _swap_class(config, _PLAIN, _FUSED, REGISTERED_NAME)


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`fused_config`: standard Keras layers only (what is saved)."""
    return _swap_class(config, _FUSED, _PLAIN, None)


def count_fused(model: Any) -> int:
    """Number of :class:`FusedBatchNormalization` layers in ``model`` (nested models included)."""
    cls = layer_class()
    n = 0
    for layer in model.layers:
        if hasattr(layer, "layers"):
            n += count_fused(layer)
        elif isinstance(layer, cls):
            n += 1
    return n


def fused_copy(model: Any) -> Any:
    """Uncompiled copy of ``model`` with the same weights, its batch norms fused.

    Parameters
    ----------
    model : keras.Model
        A functional model, e.g. from :func:`napari_sandseg.model.build_model`.

    Returns
    -------
    keras.Model
        Same architecture, layer names and weights; every ``BatchNormalization`` is a
        :class:`FusedBatchNormalization`.
    """
    copy = type(model).from_config(fused_config(model.get_config()), custom_objects=custom_objects())
    copy.set_weights(model.get_weights())
    return copy
