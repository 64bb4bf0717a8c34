"""Run infrastructure: imports nothing of this project outside `core`.

`files` (atomic writes, JSON lines, digests), `rundir` (run folders:
ownership, lock, resume check, shards, skipped images), `progress`,
`quiet` (native log noise filtered from the scripts' stderr), `checks`
(one-line checks of settings), `imagenet` (the 1000 classes).
"""
