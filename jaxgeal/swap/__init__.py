"""Applying a trained Swapping Autoencoder to real images (Park et al., NeurIPS 2020, §4).

Modules: `autoencoder` (the `SwappingAutoencoder`: encode, deterministic decode, swap, texture interpolation,
region swap; `principal_directions` of texture codes; re-exported here) and `__main__` (the
`python -m jaxgeal.swap` command line: grid, swap, interpolate, region, edit).

    from jaxgeal.swap import SwappingAutoencoder
    model = SwappingAutoencoder.load("workdir/model")
    hybrids = model.swap(structure_images, texture_images)
"""

from jaxgeal.swap.autoencoder import SwappingAutoencoder, principal_directions

__all__ = ["SwappingAutoencoder", "principal_directions"]
