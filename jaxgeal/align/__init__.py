"""Applying a trained GANgealing model to real images (Peebles et al., CVPR 2022, §4.1-4.3, appendices E, G).

Modules: `aligner` (the `Aligner`: congealing, point transfer, dense propagation; re-exported here), `splat`
(Gaussian splatting of labels), `blend` (alpha / Laplacian-pyramid compositing), `dataset` (congealing a whole
image folder), `video` (propagation through video frames), `visualize` (figures and animations) and `__main__`
(the `python -m jaxgeal.align` command line).

    from jaxgeal.align import Aligner
    aligner = Aligner.load("workdir/model")
    out = aligner.congeal(images)
"""

from jaxgeal.align.aligner import Aligner, ModelNotFoundError

__all__ = ["Aligner", "ModelNotFoundError"]
