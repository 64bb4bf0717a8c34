import dataclasses
import os
import socket
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import tensorflow as tf

from compression_helps.core import checks
from compression_helps.engine import evaluate, ranking
from compression_helps.models import registry
from compression_helps.selection import runner
from compression_helps.sources import datasets
from tests import testing_utils

_WORKER = """
import sys, time
import tensorflow as tf
service = tf.data.experimental.service
config = service.WorkerConfig(dispatcher_address=sys.argv[1])
worker = service.WorkerServer(config)
time.sleep(600)
"""


class DataServiceTest(tf.test.TestCase):
    def test_worker_in_another_process_evaluates_every_image(self):
        # A worker runs the pipeline's graph alone: nothing in it may call
        # back into this process' Python (`tf.numpy_function`).
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, [0, 2, 4, 6])
        with open(os.path.join(folder, "n01440764_bomb.JPEG"), "wb") as f:
            f.write(testing_utils.image_claiming("jpeg", 13000, 13000))
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = registry.load_classifier(model)
        source = datasets.load(folder)
        kwargs = dict(codecs=(50,), batch_size=2, verbose=False)
        local, local_skipped = evaluate.predict(classifier, source, **kwargs)
        dispatcher = tf.data.experimental.service.DispatchServer()
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER, dispatcher.target.split("://")[1]],
            env=testing_utils.script_environment(TF_CPP_MIN_LOG_LEVEL="3"),
        )
        try:
            remote, remote_skipped = evaluate.predict(
                classifier, source, data_service=dispatcher.target, **kwargs
            )
        finally:
            worker.kill()
            worker.wait()
        self.assertEqual(remote.num_images, 4)
        np.testing.assert_array_equal(local.ranks, remote.ranks)
        self.assertEqual(local_skipped, remote_skipped)
        self.assertStartsWith(remote_skipped[0].reason, "too many pixels")

    def test_two_local_workers_give_the_single_process_results(self):
        folder = self.create_tempdir().full_path
        testing_utils.write_image_folder(folder, list(range(0, 40, 3)))
        with open(os.path.join(folder, "n01440764_bad.JPEG"), "wb") as f:
            f.write(b"not a jpeg")
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        classifier = registry.load_classifier(model)
        source = datasets.load(folder)
        kwargs = dict(
            codecs=(80, 30), batch_size=3, shard_size=5, verbose=False
        )

        local, local_skipped = evaluate.predict(classifier, source, **kwargs)

        dispatcher, workers = testing_utils.start_data_service(2)
        remote, remote_skipped = evaluate.predict(
            classifier, source, data_service=dispatcher.target, **kwargs
        )
        del workers

        self.assertEqual(local_skipped, remote_skipped)
        self.assertLen(local_skipped, 1)
        for field in dataclasses.fields(ranking.Predictions):
            np.testing.assert_array_equal(
                getattr(local, field.name),
                getattr(remote, field.name),
                err_msg=field.name,
            )


def closed_port():
    """A local port bound but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("localhost", 0))
    return sock  # Keep it open: no one else can listen there meanwhile.


class DispatcherCheckTest(tf.test.TestCase):
    def test_a_running_dispatcher_passes(self):
        dispatcher, _workers = testing_utils.start_data_service()
        checks.data_service(dispatcher.target)
        checks.data_service(dispatcher.target.split("://")[1])
        checks.data_service(None)

    def test_closed_port_fails_in_one_line_within_seconds(self):
        sock = closed_port()
        address = f"grpc://localhost:{sock.getsockname()[1]}"
        start = time.monotonic()
        with self.assertRaisesRegex(
            ValueError, f"^data_service {address}: no dispatcher there"
        ) as e:
            checks.data_service(address)
        self.assertLess(time.monotonic() - start, 3)
        self.assertNotIn("\n", str(e.exception))
        sock.close()

    def test_silent_server_fails_after_the_timeout(self):
        # Accepts connections but never answers, unlike a gRPC server.
        with socket.socket() as server:
            server.bind(("localhost", 0))
            server.listen()
            address = f"localhost:{server.getsockname()[1]}"
            start = time.monotonic()
            with self.assertRaisesRegex(ValueError, "no answer within 0.5 s"):
                checks.data_service(address, timeout_s=0.5)
            self.assertLess(time.monotonic() - start, 3)

    def test_malformed_addresses(self):
        for address in ("http://host:5050", "grpc://host", "host:port"):
            with self.subTest(address):
                with self.assertRaisesRegex(ValueError, "grpc://host:port"):
                    checks.data_service(address)

    def test_run_refuses_a_dead_dispatcher_before_any_work(self):
        sock = closed_port()
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        config = runner.Config(
            model=registry.ModelConfig(model),
            data=datasets.DataConfig("/nowhere"),
            data_service=f"localhost:{sock.getsockname()[1]}",
        )
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        with mock.patch.object(datasets.DataConfig, "load") as load:
            with self.assertRaisesRegex(ValueError, "no dispatcher there"):
                runner.run(config, workdir, verbose=False)
        load.assert_not_called()
        self.assertFalse(os.path.exists(workdir))
        sock.close()
