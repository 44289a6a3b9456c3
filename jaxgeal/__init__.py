"""jaxgeal: GAN-supervised dense visual alignment (Peebles et al., CVPR 2022) and StyleGAN2 in JAX/Flax."""

__version__ = "0.1.0"
