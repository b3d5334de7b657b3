#!/usr/bin/env python3
"""Regenerates the decoding and resampling goldens of processor/ with Pillow.

Run with Pillow 9.4.0 and NumPy (Debian 12: apt-get install python3-pil python3-numpy), the
versions that produced the Hugging Face fixtures, from the repository root:

    /usr/bin/python3 testdata/processor/make_goldens.py

It writes small test images into testdata/processor/images/ (except the two GIFs with frame
offsets, which come from Go's encoder and are kept as committed files) and two goldens:

* decode_goldens.json: for each image, Pillow's mode, size and the RGB bytes (hex) of the two
  Hugging Face paths: Idefics2Processor's load_image (ImageOps.exif_transpose + convert("RGB"))
  and Idefics2ImageProcessor's convert_to_rgb (non-RGB modes: RGBA, alpha_composite over white,
  RGB). JPEG entries are marked inexact (Go's IDCT differs from libjpeg-turbo's).
* resize_goldens.json: Image.resize results of a small random image for every convolution filter
  and a range of sizes.
"""

import io
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

import PIL

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "images")
HF_IMAGES = os.path.join(ROOT, "..", "hf", "images")


def png_chunk(typ, data):
    c = struct.pack(">I", len(data)) + typ + data
    return c + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)


def raw_png(width, height, color_type, depth, rows, extra=()):
    """Writes a PNG from already packed scanlines (bytes per row, filter byte added here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for typ, data in extra:
        out += png_chunk(typ, data)
    out += png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    return out


def pack_bits(values, depth):
    out = bytearray()
    acc, n = 0, 0
    for v in values:
        acc = (acc << depth) | v
        n += depth
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def tiff_orientation(o, big_endian=False):
    if big_endian:
        return b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, o, 0) + b"\x00\x00\x00\x00"
    return b"II\x2a\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, o, 0) + b"\x00\x00\x00\x00"


def photo(w, h, x0=150, y0=80):
    im = Image.open(os.path.join(HF_IMAGES, "chelsea.png")).convert("RGB")
    return im.crop((x0, y0, x0 + w, y0 + h))


def gradient_rgba(w, h):
    a = np.zeros((h, w, 4), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            a[y, x] = ((x * 37 + y * 11) % 256, (x * 5 + y * 29) % 256, (x * y * 7) % 256, (x * 255 // max(w - 1, 1) + y * 13) % 256)
    return a


def write_images():
    os.makedirs(IMAGES, exist_ok=True)
    w, h = 7, 5
    g = gradient_rgba(w, h)
    grey = [((x * 41 + y * 17) % 256) for y in range(h) for x in range(w)]
    grey[3] = 77  # value made transparent below

    def save(name, data):
        with open(os.path.join(IMAGES, name), "wb") as f:
            f.write(data)

    def pil_save(name, im, **kw):
        buf = io.BytesIO()
        im.save(buf, format=name.rsplit(".", 1)[1].upper().replace("JPG", "JPEG"), **kw)
        save(name, buf.getvalue())

    # PNG, written by hand to control colour type, depth and chunks.
    save("gray8.png", raw_png(w, h, 0, 8, [bytes(grey[y * w:(y + 1) * w]) for y in range(h)]))
    save("gray8_trns.png", raw_png(w, h, 0, 8, [bytes(grey[y * w:(y + 1) * w]) for y in range(h)], [(b"tRNS", struct.pack(">H", 77))]))
    g16 = [(v * 257 * 3) % 65536 if i % 3 else v for i, v in enumerate(grey)]
    g16[5] = 200
    rows16 = [b"".join(struct.pack(">H", g16[y * w + x]) for x in range(w)) for y in range(h)]
    save("gray16.png", raw_png(w, h, 0, 16, rows16))
    save("gray16_trns.png", raw_png(w, h, 0, 16, rows16, [(b"tRNS", struct.pack(">H", 200))]))
    g1 = [(x + y) % 2 for y in range(h) for x in range(w)]
    save("gray1.png", raw_png(w, h, 0, 1, [pack_bits(g1[y * w:(y + 1) * w], 1) for y in range(h)]))
    save("gray1_trns0.png", raw_png(w, h, 0, 1, [pack_bits(g1[y * w:(y + 1) * w], 1) for y in range(h)], [(b"tRNS", struct.pack(">H", 0))]))
    g2 = [(x * 3 + y) % 4 for y in range(h) for x in range(w)]
    save("gray2_trns.png", raw_png(w, h, 0, 2, [pack_bits(g2[y * w:(y + 1) * w], 2) for y in range(h)], [(b"tRNS", struct.pack(">H", 1))]))
    g4 = [(x * 5 + y * 3) % 16 for y in range(h) for x in range(w)]
    save("gray4.png", raw_png(w, h, 0, 4, [pack_bits(g4[y * w:(y + 1) * w], 4) for y in range(h)]))
    rgb_rows = [bytes(g[y, :, :3].tobytes()) for y in range(h)]
    save("rgb8.png", raw_png(w, h, 2, 8, rgb_rows))
    t = g[1, 2, :3]
    save("rgb8_trns.png", raw_png(w, h, 2, 8, rgb_rows, [(b"tRNS", struct.pack(">HHH", *[int(v) for v in t]))]))
    save("rgb16.png", raw_png(w, h, 2, 16, [b"".join(struct.pack(">HHH", *[min(int(v) * 257 + (x * 31) % 256, 65535) for v in g[y, x, :3]]) for x in range(w)) for y in range(h)]))
    save("rgba8.png", raw_png(w, h, 6, 8, [bytes(g[y].tobytes()) for y in range(h)]))
    save("rgba16.png", raw_png(w, h, 6, 16, [b"".join(struct.pack(">HHHH", *[min(int(v) * 257 + 100, 65535) for v in g[y, x]]) for x in range(w)) for y in range(h)]))
    save("la8.png", raw_png(w, h, 4, 8, [bytes(b for x in range(w) for b in (grey[y * w + x], int(g[y, x, 3]))) for y in range(h)]))
    save("la16.png", raw_png(w, h, 4, 16, [b"".join(struct.pack(">HH", grey[y * w + x] * 257 + 3, int(g[y, x, 3]) * 257) for x in range(w)) for y in range(h)]))
    plte = bytes(v for i in range(6) for v in ((i * 50) % 256, (255 - i * 40) % 256, (i * 97) % 256))
    idx = [(x + 2 * y) % 7 for y in range(h) for x in range(w)]  # index 6 is past the 6-entry palette
    save("palette.png", raw_png(w, h, 3, 8, [bytes(idx[y * w:(y + 1) * w]) for y in range(h)], [(b"PLTE", plte)]))
    save("palette_trns.png", raw_png(w, h, 3, 8, [bytes(idx[y * w:(y + 1) * w]) for y in range(h)], [(b"PLTE", plte), (b"tRNS", bytes([255, 0, 128, 255]))]))
    for o in range(1, 9):
        # eXIf after IDAT for odd orientations: Pillow reads it either way.
        ex = [(b"eXIf", tiff_orientation(o, big_endian=o % 2 == 0))]
        save("exif%d.png" % o, raw_png(w, h, 2, 8, rgb_rows, ex))
    # GIF written by Pillow: a full-frame image with a transparent index.
    p = Image.new("P", (w, h))
    p.putpalette([v for i in range(16) for v in ((i * 16) % 256, (255 - i * 9) % 256, (i * 61) % 256)])
    p.putdata([(x * 3 + y) % 16 for y in range(h) for x in range(w)])
    pil_save("gif_trns.gif", p, transparency=5)
    # BMP written by Pillow: 24-bit, 8-bit palette, 1-bit; 32-bit BI_RGB (alpha ignored by
    # Pillow), and a V5 32-bit BI_BITFIELDS with an alpha mask built by hand.
    pil_save("rgb24.bmp", Image.fromarray(g[..., :3], "RGB"))
    pil_save("pal8.bmp", p)
    pil_save("mono1.bmp", Image.fromarray((np.array(g1, dtype=np.uint8).reshape(h, w) * 255), "L").convert("1"))
    pil_save("rgba32.bmp", Image.fromarray(g, "RGBA"))
    save("rgba32_v5.bmp", bmp_v5_bitfields(g))
    # WebP: lossless with and without alpha, lossy at odd and even sizes, lossy with alpha, and
    # EXIF orientation.
    ph = photo(13, 9)
    pil_save("lossless_rgba.webp", Image.fromarray(g, "RGBA"), lossless=True)
    pil_save("lossless_rgb.webp", ph, lossless=True)
    pil_save("lossy_13x9.webp", ph, quality=80)
    pil_save("lossy_12x8.webp", photo(12, 8, 40, 60), quality=80)
    pil_save("lossy_1x1.webp", photo(1, 1), quality=80)
    pil_save("lossy_rgba.webp", Image.fromarray(np.concatenate([np.array(ph), gradient_rgba(13, 9)[..., 3:]], axis=2), "RGBA"), quality=80)
    pil_save("lossy_exif6.webp", ph, quality=80, exif=b"Exif\x00\x00" + tiff_orientation(6))
    # JPEG (libjpeg-turbo): 4:2:0, 4:2:2, 4:4:4, grey, CMYK (Adobe), EXIF orientation.
    ph = photo(47, 31)
    pil_save("photo420.jpg", ph, quality=90, subsampling=2)
    pil_save("photo422.jpg", ph, quality=90, subsampling=1)
    pil_save("photo444.jpg", ph, quality=90, subsampling=0)
    pil_save("gray.jpg", ph.convert("L"), quality=90)
    pil_save("cmyk.jpg", ph.convert("CMYK"), quality=90)
    pil_save("exif6.jpg", ph, quality=90, subsampling=2, exif=b"Exif\x00\x00" + tiff_orientation(6, big_endian=True))
    pil_save("exif3.jpg", photo(16, 16), quality=90, subsampling=2, exif=b"Exif\x00\x00" + tiff_orientation(3))

    write_tiffs(g, p, ph)


def write_tiffs(g, p, ph):
    """TIFF (decoded with golang.org/x/image/tiff): RGB uncompressed, LZW and Deflate, RGBA, 8-bit grey, palette."""
    def pil_save(name, im, **kw):
        buf = io.BytesIO()
        im.save(buf, format="TIFF", **kw)
        with open(os.path.join(IMAGES, name), "wb") as f:
            f.write(buf.getvalue())

    pil_save("rgb8.tif", Image.fromarray(g[..., :3], "RGB"))
    pil_save("rgb8_lzw.tif", ph, compression="tiff_lzw")
    pil_save("rgb8_deflate.tif", ph, compression="tiff_adobe_deflate")
    pil_save("rgba8.tif", Image.fromarray(g, "RGBA"))
    pil_save("gray8.tif", ph.convert("L"))
    pil_save("pal8.tif", p)


def bmp_v5_bitfields(rgba):
    h, w, _ = rgba.shape
    pixels = b"".join(bytes(v for x in range(w) for v in (rgba[y, x, 2], rgba[y, x, 1], rgba[y, x, 0], rgba[y, x, 3])) for y in reversed(range(h)))
    info = struct.pack("<IiiHHIIiiII", 124, w, h, 1, 32, 3, len(pixels), 2835, 2835, 0, 0)
    info += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    info += b"BGRs" + b"\x00" * 36 + struct.pack("<III", 0, 0, 0) + struct.pack("<IIII", 4, 0, 0, 0)
    assert len(info) == 124
    off = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", off + len(pixels), 0, 0, off) + info + pixels


def convert_to_rgb(im):
    """transformers.image_transforms.convert_to_rgb (v4.44.2)."""
    if im.mode == "RGB":
        return im
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def decode_goldens():
    out = []
    for name in sorted(os.listdir(IMAGES)):
        path = os.path.join(IMAGES, name)
        im = Image.open(path)
        mode, size = im.mode, im.size
        proc = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        improc = convert_to_rgb(Image.open(path))
        out.append({
            "file": "images/" + name,
            "pil_mode": mode,
            "width": size[0],
            "height": size[1],
            "exact": not name.endswith(".jpg"),
            "processor": {"width": proc.size[0], "height": proc.size[1], "rgb": proc.tobytes().hex()},
            "image_processor": {"width": improc.size[0], "height": improc.size[1], "rgb": improc.tobytes().hex()},
        })
    return out


def resize_goldens():
    rng = np.random.RandomState(1234)
    src = rng.randint(0, 256, size=(17, 23, 3), dtype=np.uint8)
    # Sharp structure as well as noise: a bright bar and a dark corner.
    src[5:8, :, :] = 250
    src[:4, :4, :] = 3
    Image.fromarray(src, "RGB").save(os.path.join(ROOT, "resize_src.png"))
    im = Image.fromarray(src, "RGB")
    sizes = [(5, 3), (11, 17), (23, 8), (24, 17), (23, 17), (46, 34), (1, 1), (60, 7), (3, 40), (9, 9)]
    out = []
    for f in (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX, Image.HAMMING):
        for (w, h) in (sizes if f == Image.BILINEAR else sizes[:4]):
            r = im.resize((w, h), resample=f)
            out.append({"filter": int(f), "width": w, "height": h, "rgb": r.tobytes().hex()})
    return out


def main():
    assert PIL.__version__ == "9.4.0", "goldens are pinned to Pillow 9.4.0, got " + PIL.__version__
    write_images()
    meta = {"generator": "testdata/processor/make_goldens.py", "pillow": PIL.__version__, "numpy": np.__version__}
    with open(os.path.join(ROOT, "decode_goldens.json"), "w") as f:
        json.dump(dict(meta, images=decode_goldens()), f, indent=1)
        f.write("\n")
    with open(os.path.join(ROOT, "resize_goldens.json"), "w") as f:
        json.dump(dict(meta, source="resize_src.png", cases=resize_goldens()), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
