"""Weakly-supervised semantic segmentation driven by S4Net salient-instance cues."""

__version__ = "0.1.0"
