"""Gradient maps of the paper's Sec. 3.4 / Fig. 6: |dL_seg / dH| summed over channels.

H is the feature map entering RoIMasking (after the compression conv and ReLU).
The weights are held fixed; the segmentation loss of one ground-truth instance is
back-propagated to H only. Ternary masking should show responses on the ring
around the box, binary masking hardly any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from s4net.models.roi_masking import RoIMasking, grow_boxes
from s4net.models.s4net import SEG_STRIDE, S4Net
from s4net.models.seg_branch import mask_loss
from s4net.models.windows import whole_map_windows


@dataclass(frozen=True)
class GradientMap:
    """A gradient map at the network's input size.

    Attributes:
        values: float32[S/8, S/8] summed |gradient| per stride-8 cell.
        box: float32[4] the instance box (network-input pixels).
        ring: float32[4] the box grown by alpha (the ternary ring's outer edge).
        masking: the RoIMasking variant used.
    """

    values: np.ndarray
    box: np.ndarray
    ring: np.ndarray
    masking: str


def gradient_map(model: S4Net, image: torch.Tensor, box: torch.Tensor, mask: torch.Tensor,
                 masking: str | None = None) -> GradientMap:
    """Gradient of one instance's mask loss w.r.t. the features entering RoIMasking.

    Args:
        model: a trained S4Net (its weights are not changed).
        image: float Tensor[3, H, W] in [0, 1].
        box: Tensor[4] (x1, y1, x2, y2) of the instance in original pixels.
        mask: Tensor[H, W] its binary ground-truth mask.
        masking: RoIMasking variant to use (default: the model's own).
    """
    model.eval()
    variant = masking or model.config.masking
    size = model.config.image_size
    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    scale = torch.tensor([size / width, size / height, size / width, size / height], device=device)
    boxes = (box.to(device).float() * scale)[None]
    with torch.no_grad():
        batch, _ = model.preprocess([image.to(device)])
        features = F.relu(model.compress(model.fpn(model.backbone(batch))["p3"]))
    features = features.detach().requires_grad_(True)
    layer = RoIMasking(variant, model.config.alpha, SEG_STRIDE, model.config.roi_output_size)
    image_index = torch.zeros(1, dtype=torch.long, device=device)
    windows = None if layer.is_pooling else whole_map_windows(image_index, tuple(features.shape[-2:]))
    logits = model.branch(layer(features, boxes, image_index, windows))
    target = F.interpolate(mask.to(device).float()[None, None], size=(size, size), mode="bilinear",
                           align_corners=False)[0]
    extent = boxes if windows is None else windows.pixel_boxes(SEG_STRIDE)
    targets, weights = model.mask_targets(target, boxes, extent, tuple(logits.shape[-2:]))
    loss = mask_loss(logits, targets, weights)
    (grad,) = torch.autograd.grad(loss, features)
    values = grad[0].abs().sum(dim=0).cpu().numpy().astype(np.float32)
    ring = grow_boxes(boxes, model.config.alpha)[0].detach().cpu().numpy()
    return GradientMap(values, boxes[0].detach().cpu().numpy(), ring, variant)


def render_gradient_maps(image: np.ndarray, maps: list[GradientMap], titles: list[str], size: int) -> np.ndarray:
    """Image with box (orange) and ring (blue) next to each gradient map as a heat map, one PNG row."""
    from PIL import Image

    from s4net.visualize import draw_boxes, heatmap, side_by_side

    colours = np.array([[255, 150, 0], [60, 140, 255]], dtype=np.uint8)
    picture = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    vmax = max(float(np.percentile(m.values, 99.5)) for m in maps) or 1.0
    panels = [draw_boxes(picture, np.stack([maps[0].box, maps[0].ring]), colours)]
    for m in maps:
        heat = heatmap(m.values, vmax=vmax)
        heat = np.asarray(Image.fromarray(heat).resize((size, size), Image.NEAREST))
        panels.append(draw_boxes(heat, np.stack([m.box, m.ring]), colours))
    return side_by_side(panels, ["image, box, ring"] + titles)
