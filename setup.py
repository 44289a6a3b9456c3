"""jaxgeal: GAN-supervised dense visual alignment (GANgealing) and StyleGAN2 in JAX/Flax."""
import setuptools

setuptools.setup(
    name="jaxgeal",
    version="0.1.0",
    description="GANgealing and StyleGAN2 in JAX/Flax",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["jaxgeal", "jaxgeal.*"]),
    # The demo's shipped 32 px generator (configs/demo.py; re-create with configs/demo.py:train_gan).
    package_data={"jaxgeal": ["assets/demo_stylegan2/*", "assets/demo_stylegan2/**/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "clu>=0.0.12",
        "tensorflow-datasets>=4.9.10",
        "grain>=0.2.18",
        "numpy>=2.0",
        "pillow>=10.0",
        "tqdm>=4.66",
        # TensorBoard event files without TensorFlow (jaxgeal.metric_writers).
        "tensorboardX>=2.6",
        # Video reading/writing for `python -m jaxgeal.align video`.
        "imageio>=2.31",
        "imageio-ffmpeg>=0.4.9",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "lmdb>=1.4"],
        # Reading LSUN's LMDB downloads (python -m jaxgeal.datasets.prepare lsun).
        "lsun": ["lmdb>=1.4"],
    },
    entry_points={"console_scripts": []},
)
