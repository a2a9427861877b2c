"""S4Net: single-stage salient-instance segmentation (Fan et al., CVPR 2019)."""

__version__ = "0.1.0"
