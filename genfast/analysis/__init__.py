"""The practicum's figures as reproducible analyses with numbers, and ``genfast report``.

Each analysis is a function returning an :class:`Analysis` (matplotlib figures by name and a dict
of numbers); :func:`report` runs every one that applies to a trained run and writes PNG figures, a
self-contained HTML page, a markdown summary and ``summary.json``. Needs the ``[analysis]`` extra
(matplotlib, scikit-learn, scikit-image, OpenCV).
"""

from .autoencoders import denoising_vs_inpainting, detector_auroc, encoder_kernels, garbage_test, reconstructions
from .classifier import DigitClassifier, classifier_for, frechet_distance, sample_quality
from .common import Analysis, Run, load_run, psnr, ssim
from .generative import gan_training, interpolation, samples, tsne
from .report import report

__all__ = [
    "Analysis", "DigitClassifier", "Run", "classifier_for", "denoising_vs_inpainting", "detector_auroc",
    "encoder_kernels", "frechet_distance", "gan_training", "garbage_test", "interpolation", "load_run",
    "psnr", "reconstructions", "report", "sample_quality", "samples", "ssim", "tsne",
]
