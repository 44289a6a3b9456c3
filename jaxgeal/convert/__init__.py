"""Converters from upstream PyTorch checkpoints (GANgealing, rosinality StyleGAN2, swapping autoencoder)."""
