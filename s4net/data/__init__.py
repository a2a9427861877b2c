"""Salient-instance datasets in COCO instance format."""

from s4net.data.coco import (
    SalientInstanceDataset,
    SalientSample,
    coco_document,
    encode_mask,
    mask_box,
)
from s4net.data.convert import convert_instance_masks

__all__ = [
    "SalientInstanceDataset",
    "SalientSample",
    "coco_document",
    "convert_instance_masks",
    "encode_mask",
    "mask_box",
]
