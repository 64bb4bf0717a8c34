"""Candidates and their evaluation; imports `core`, `sources`, `models`.

`candidates` (codecs and the per-image JPEG work in tf.data),
`candidate_store`, `ranking` (per-candidate results and the rank rule),
`evaluate` (the model step and the streamed evaluation), `in_memory`
(images decoded once, many codecs), `metrics`, `job` (the set-up every job
shares).
"""
