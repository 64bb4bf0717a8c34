"""The heads trained on the stacked candidate features, and their control.

SPEC.md ("Multi-input model: heads and their control"). Every head maps the
`[B, V, F]` pooled features of the original and its V-1 JPEG versions (the
multi-input model's stack, or `features.cache_features`) to `[B, C]`
probabilities, and starts (`head_init="backbone"`) exactly at the backbone's
predictions on the original:

    multi_input   the paper's head: flatten + a new softmax Dense over all
                  V x F features (`network.build_head`).
    single_input  the control: the same Dense on the original's F features
                  only, trained exactly like the others. Training any head
                  on the data's classes raises top-1 by itself; the paper's
                  claim is what the other V-1 inputs add to that.
    mixing        beyond the paper: the backbone's own classifier, frozen,
                  gives each candidate's logits; V learned weights mix them
                  (a learned ensemble of the JPEG versions) and a per-class
                  bias follows, so it can learn the data's class prior as the
                  control does while keeping the 1000-class knowledge.

`training_model` joins the heads into one model with an output per head:
their weights are disjoint and the loss is the sum of theirs, so one `fit`
gives each head exactly the updates it would get alone (Adam and SGD update
each weight from its own gradient), on the same batches in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from compression_helps.multi_input import network

__all__ = [
    "HEADS",
    "MIXING",
    "MULTI_INPUT",
    "SINGLE_INPUT",
    "MixCandidates",
    "build",
    "training_model",
]

MULTI_INPUT = "multi_input"
SINGLE_INPUT = "single_input"
MIXING = "mixing"
HEADS = (MULTI_INPUT, SINGLE_INPUT, MIXING)


@keras.saving.register_keras_serializable(package="compression_helps")
class MixCandidates(keras.layers.Layer):
    """`[B, V, C]` logits -> `[B, C]`: sum_v w_v logits_v + b.

    w starts one-hot on the original (candidate 0) and b at zero: the output
    is then the original's logits.
    """

    def build(self, input_shape: tuple) -> None:
        """Creates w `[V]` and b `[C]`."""
        num_candidates, num_classes = input_shape[1], input_shape[2]
        self.weights_per_candidate = self.add_weight(
            shape=(num_candidates,),
            initializer=keras.initializers.Constant(
                np.eye(num_candidates, dtype=np.float32)[0]
            ),
            name="candidate_weights",
        )
        self.bias = self.add_weight(
            shape=(num_classes,), initializer="zeros", name="bias"
        )

    def call(self, logits):
        """The mixed logits."""
        return (
            keras.ops.einsum("bvc,v->bc", logits, self.weights_per_candidate)
            + self.bias
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """`[B, C]`."""
        return (input_shape[0], input_shape[2])


def _single_input_head(
    num_candidates: int, num_features: int, num_classes: int
) -> keras.Model:
    features = keras.Input((num_candidates, num_features), name="features")
    # Keeps candidate 0, the original: [B, 1, F] -> [B, F].
    original = keras.layers.Cropping1D((0, num_candidates - 1))(features)
    original = keras.layers.Flatten(name="original_features")(original)
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", name="classifier"
    )(original)
    return keras.Model(features, probabilities, name=SINGLE_INPUT)


def _mixing_head(
    num_candidates: int,
    num_features: int,
    backbone_classifier: keras.layers.Dense,
) -> keras.Model:
    num_classes = int(backbone_classifier.kernel.shape[1])
    features = keras.Input((num_candidates, num_features), name="features")
    # The backbone's classifier without its softmax, on every candidate.
    logits_layer = keras.layers.Dense(
        num_classes, name="backbone_logits", trainable=False
    )
    logits = logits_layer(features)  # [B, V, C]
    logits_layer.set_weights(
        [keras.ops.convert_to_numpy(w) for w in backbone_classifier.weights]
    )
    mixed = MixCandidates(name="mix")(logits)
    probabilities = keras.layers.Activation("softmax", name="softmax")(mixed)
    return keras.Model(features, probabilities, name=MIXING)


def build(
    kind: str,
    num_candidates: int,
    num_features: int,
    backbone_classifier: keras.layers.Dense,
    head_init: str = "backbone",
    seed: int | None = None,
) -> keras.Model:
    """One head, initialised.

    Args:
      kind: one of `HEADS`.
      num_candidates: V.
      num_features: F.
      backbone_classifier: the backbone's softmax `Dense`
        (`network.split_classifier`).
      head_init: `network.HEAD_INITS`: "backbone" starts at the
        backbone's predictions on the original, "random" draws the new
        Dense layer's kernel (the mixing head always starts at the backbone:
        it has no new Dense layer).
      seed: for "random".

    Returns:
      `[B, V, F]` float32 -> `[B, C]` probabilities, named `kind`.

    Raises:
      ValueError: unknown `kind`.
    """
    num_classes = int(backbone_classifier.kernel.shape[1])
    if kind == MULTI_INPUT:
        head = network.build_head(
            num_candidates, num_features, num_classes, name=MULTI_INPUT
        )
    elif kind == SINGLE_INPUT:
        head = _single_input_head(num_candidates, num_features, num_classes)
    elif kind == MIXING:
        return _mixing_head(num_candidates, num_features, backbone_classifier)
    else:
        raise ValueError(f"head must be one of {HEADS}: {kind!r}")
    network.init_head(head, backbone_classifier, head_init, seed)
    return head


def training_model(heads: Sequence[keras.Model]) -> keras.Model:
    """The heads side by side: `[B, V, F]` -> `{head name: [B, C]}`.

    Args:
      heads: `build` models over the same `[B, V, F]` input; their layers
        are shared, not copied, so training this trains them.

    Returns:
      A model with one output per head, named as the heads.
    """
    features = keras.Input(heads[0].input.shape[1:], name="features")
    return keras.Model(
        features,
        {head.name: head(features) for head in heads},
        name="heads",
    )
