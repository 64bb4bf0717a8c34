"""Classifiers; imports only `core`.

`registry` (model names, weights, preprocessing, `ModelConfig`),
`efficientnet_lite` (EfficientNet-Lite0/1/2 in Keras),
`efficientnet_weights` (their ImageNet checkpoints and weights cache),
`torch_checkpoint` (a torch-free reader of PyTorch checkpoints).
"""
