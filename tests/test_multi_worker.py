"""Two worker processes on localhost train like one (multi_worker)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests import testing_utils


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


class MultiWorkerTest(tf.test.TestCase):
    def test_two_workers_train_like_one_and_only_the_chief_writes(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [0, 2, 4, 6, 8, 10])
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        flags = [
            f"--model={model}",
            f"--data={folder}",
            "--qualities=90,10",
            "--num_eval=2",
            "--batch_size=4",  # Two per worker.
            "--epochs=2",
            "--learning_rate=0.01",
        ]
        single = self.create_tempdir().full_path
        result = testing_utils.run_module(
            "experiments.train_multi_input",
            *flags,
            f"--workdir={single}",
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr)

        # Both workers share one workdir (a shared file system).
        shared = self.create_tempdir().full_path
        cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "experiments.train_multi_input",
                    *flags,
                    "--strategy=multi_worker",
                    f"--workdir={shared}",
                ],
                cwd=testing_utils.REPO_ROOT,
                env={
                    **os.environ,
                    "TF_CONFIG": json.dumps(
                        {
                            "cluster": cluster,
                            "task": {"type": "worker", "index": index},
                        }
                    ),
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in range(2)
        ]
        for worker in workers:
            _, stderr = worker.communicate(timeout=600)
            self.assertEqual(worker.returncode, 0, stderr[-3000:])

        alone = read_json(os.path.join(single, "results.json"))
        together = read_json(os.path.join(shared, "results.json"))
        self.assertEqual(together["num_replicas"], 2)
        self.assertEqual(together["eval_ids"], alone["eval_ids"])
        for name, scores in alone["scores"].items():
            self.assertAllClose(together["scores"][name], scores)
        # The same training, epoch by epoch, within float tolerance; one
        # line per epoch: only the chief writes the log.
        lines = read_lines(os.path.join(shared, "metrics.jsonl"))
        expected = read_lines(os.path.join(single, "metrics.jsonl"))
        self.assertLen(lines, 2)
        for got, want in zip(lines, expected, strict=True):
            self.assertEqual(set(got), set(want))
            for key in want:
                self.assertAllClose(got[key], want[key], rtol=1e-4, atol=1e-6)
        # The features were computed once, by the chief.
        for name in ("features.npz", "eval_features.npz"):
            np.testing.assert_allclose(
                np.load(os.path.join(shared, name))["features"],
                np.load(os.path.join(single, name))["features"],
                rtol=1e-5,
                atol=1e-6,
            )


if __name__ == "__main__":
    tf.test.main()
