#!/usr/bin/env python3
"""Writes the golden outputs of Idefics2ImageProcessor for image sizes other than the checkpoints' own.

Run with Pillow 9.4.0 and NumPy (Debian 12: apt-get install python3-pil python3-numpy) from the repository root:

    /usr/bin/python3 testdata/processor/make_edge_goldens.py

The processor is written out here from transformers v4.44.2 (models/idefics2/image_processing_idefics2.py and
image_transforms.py), step by step, on uint8 RGB arrays: split into four quadrant crops plus the whole image
(split at width // 2 and height // 2), resize each with get_resize_output_image_size and PIL's Image.resize
(bilinear), rescale in float64 then cast to float32, normalize in float32 with mean and std 0.5, and pad to the
largest height and width with zeros, with the pixel attention mask. Each case is written as
edges/<name>_pixel_values.npy (float32, (1, N, 3, H, W)) and edges/<name>_pixel_attention_mask.npy (bool,
(1, N, H, W)); cases.json lists the settings.
"""

import json
import os

import numpy as np
from PIL import Image

import PIL

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "edges")

# name, image (relative to ROOT), do_image_splitting, shortest_edge, longest_edge
CASES = [
    ("src_nosplit_20_6", "resize_src.png", False, 6, 20),
    ("src_split_16_10", "resize_src.png", True, 10, 16),
    ("src_shortest_wins", "resize_src.png", False, 30, 40),
    ("noise_split_28_14", "edges/noise_41x26.png", True, 14, 28),
    ("noise_nosplit_upscale", "edges/noise_41x26.png", False, 33, 56),
]


def resize_output_size(h, w, min_len, max_len):
    """get_resize_output_image_size of image_processing_idefics2.py."""
    aspect = w / h
    if w >= h and w > max_len:
        w = max_len
        h = int(w / aspect)
    elif h > w and h > max_len:
        h = max_len
        w = int(h * aspect)
    return max(h, min_len), max(w, min_len)


def preprocess(img, split, min_len, max_len):
    subs = [img]
    if split:
        h, w = img.shape[:2]
        mh, mw = h // 2, w // 2
        subs = [img[:mh, :mw], img[:mh, mw:], img[mh:, :mw], img[mh:, mw:], img]
    out = []
    for s in subs:
        h, w = resize_output_size(s.shape[0], s.shape[1], min_len, max_len)
        r = np.array(Image.fromarray(s).resize((w, h), resample=Image.BILINEAR))
        v = (r.astype(np.float64) * (1 / 255)).astype(np.float32)
        mean = np.array([0.5, 0.5, 0.5], dtype=np.float32)
        std = np.array([0.5, 0.5, 0.5], dtype=np.float32)
        v = (v - mean) / std
        out.append(v.transpose(2, 0, 1))
    H = max(v.shape[1] for v in out)
    W = max(v.shape[2] for v in out)
    pv = np.zeros((1, len(out), 3, H, W), dtype=np.float32)
    mask = np.zeros((1, len(out), H, W), dtype=bool)
    for i, v in enumerate(out):
        pv[0, i, :, : v.shape[1], : v.shape[2]] = v
        mask[0, i, : v.shape[1], : v.shape[2]] = True
    return pv, mask


def main():
    assert PIL.__version__ == "9.4.0", "goldens are pinned to Pillow 9.4.0, got " + PIL.__version__
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(22)
    noise = rng.randint(0, 256, size=(26, 41, 3), dtype=np.uint8)
    noise[10:14, :, :] = 240
    Image.fromarray(noise, "RGB").save(os.path.join(OUT, "noise_41x26.png"))
    manifest = []
    for name, image, split, min_len, max_len in CASES:
        img = np.array(Image.open(os.path.join(ROOT, image)).convert("RGB"))
        pv, mask = preprocess(img, split, min_len, max_len)
        np.save(os.path.join(OUT, name + "_pixel_values.npy"), pv)
        np.save(os.path.join(OUT, name + "_pixel_attention_mask.npy"), mask)
        manifest.append({"name": name, "image": image, "do_image_splitting": split,
                         "shortest_edge": min_len, "longest_edge": max_len, "shape": list(pv.shape)})
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "testdata/processor/make_edge_goldens.py", "pillow": PIL.__version__,
                   "numpy": np.__version__, "cases": manifest}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
