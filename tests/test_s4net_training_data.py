"""Training samples: the seeded order, flips and scale-jitter zooms."""

from __future__ import annotations

import torch

from s4net.data.training import PAD_VALUE, SeededBatches, Zoom, zoom_sample


def _sample() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(3, 64, 64)
    masks = torch.zeros(2, 64, 64)
    masks[0, 4:20, 6:30] = 1  # top-left instance
    masks[1, 44:60, 40:62] = 1  # bottom-right instance
    return image, masks


def test_unit_zoom_keeps_sample() -> None:
    image, masks = _sample()
    out_image, boxes, out_masks = zoom_sample(image, masks, Zoom(1.0, 0.3, 0.8))
    torch.testing.assert_close(out_image, image)
    torch.testing.assert_close(out_masks, masks)
    assert boxes.tolist() == [[6.0, 4.0, 30.0, 20.0], [40.0, 44.0, 62.0, 60.0]]


def test_zoom_in_crops_and_drops_instances_left_outside() -> None:
    image, masks = _sample()
    _, boxes, out_masks = zoom_sample(image, masks, Zoom(2.0, 0.0, 0.0))  # top-left quarter, doubled
    assert out_masks.shape == (1, 64, 64)  # the bottom-right instance is cropped away
    assert boxes.tolist() == [[12.0, 8.0, 60.0, 40.0]]
    ys, xs = (out_masks[0] > 0.5).nonzero(as_tuple=True)
    assert [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1] == boxes[0].tolist()


def test_zoom_out_pads_with_the_mean_colour() -> None:
    image, masks = _sample()
    out_image, boxes, out_masks = zoom_sample(image, masks, Zoom(0.5, 1.0, 1.0))  # shrunk into the bottom-right
    assert out_masks.shape == (2, 64, 64)
    torch.testing.assert_close(out_image[:, :32, :32], torch.tensor(PAD_VALUE)[:, None, None].expand(3, 32, 32))
    assert boxes.tolist() == [[35.0, 34.0, 47.0, 42.0], [52.0, 54.0, 63.0, 62.0]]


def test_seeded_batches_are_reproducible_and_jitter_leaves_flips_alone() -> None:
    plain = SeededBatches(10, 4, seed=5, start=0, stop=6)
    zoomed = SeededBatches(10, 4, seed=5, start=0, stop=6, scale_jitter=(0.5, 1.5))
    again = SeededBatches(10, 4, seed=5, start=3, stop=6, scale_jitter=(0.5, 1.5))
    assert [zoomed.batch(i) for i in range(3, 6)] == list(again)
    for i in range(6):
        assert [(k, f) for k, f, _ in zoomed.batch(i)] == [(k, f) for k, f, _ in plain.batch(i)]
        assert all(z is None for _, _, z in plain.batch(i))
        assert all(0.5 <= z.scale <= 1.5 and 0 <= z.fx < 1 and 0 <= z.fy < 1 for _, _, z in zoomed.batch(i))


def test_loader_workers_ship_uint8_images_that_scale_on_the_device_to_the_same_numbers(tiny_world) -> None:
    """Items carry uint8 images (a quarter of float32's bytes) unless zoomed; the batch the model sees is the
    image / 255 in float32, bit for bit, and a batch mixing zoomed and plain items is float throughout."""
    import numpy as np

    from s4net.data.coco import SalientInstanceDataset
    from s4net.data.training import TrainingSet, collate, device_images, resize_sample

    source = SalientInstanceDataset(tiny_world / "salient" / "train.json", tiny_world / "salient" / "images")
    dataset = TrainingSet(source, 64)
    plain = [dataset[(0, False, None)], dataset[(1, True, None)]]
    assert all(item.image.dtype == torch.uint8 for item in plain)
    images, _ = collate(plain)
    assert images.dtype == torch.uint8
    resized = resize_sample(source[0].image, source[0].boxes, source[0].masks, 64)[0]
    expected = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float().div_(255.0)
    assert torch.equal(device_images(images, torch.device("cpu"))[0], expected)
    mixed, _ = collate([plain[0], dataset[(1, False, Zoom(1.2, 0.5, 0.5))]])
    assert mixed.dtype == torch.float32 and torch.equal(mixed[0], expected)
