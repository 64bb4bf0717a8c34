"""Paper 1's multi-input model.

Imports `core`, `sources`, `models`, `engine`.

`network` (the 11-input model and its input pipeline), `features`
(cached backbone features), `heads`, `head_report`, `train` (the job),
`trainers`, `checkpoint` (resumable epochs), `distribute` (tf.distribute
strategies), `serving` (SavedModel export).
"""
