"""Image steps (pre-processing on Pillow images): decode_image, exif_transpose, convert,
resize. Pillow is imported when a pipeline holding one of them is built, never before."""
from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Optional

from mlfn_runtime.errors import ConfigurationError, InvalidInput
from mlfn_runtime.step import PRE, Step, kind
from mlfn_runtime.step_params import Param, choice, pad_value, positive_int

RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos", "area")
KEEP_ASPECT = ("false", "pad", "crop")
PIL_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F")
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
REDUCE_ABOVE = 16  # resize: a side shrinking more than this many times is box-reduced first
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F")


def max_image_pixels() -> Optional[int]:
    """MLFN_MAX_IMAGE_PIXELS, default 40 M (~120 MB as RGB); None when it is not a count
    (DecodeImage then refuses to load, with a sentence rather than a traceback)."""
    value = (os.environ.get("MLFN_MAX_IMAGE_PIXELS") or "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    return int(value) if value.isdigit() and int(value) > 0 else None


def pixel_bytes(mode: str) -> int:
    """Bytes per pixel Pillow stores for `mode`: 1 for 1/L/P, 2 for I;16*, else 4 (RGB and
    the two-band modes are padded to 32 bits)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def image_bytes(size: tuple, mode: str) -> int:
    return size[0] * size[1] * pixel_bytes(mode)


def mode_bands(mode: str) -> int:
    """Bands of a Pillow mode (what np.asarray gives per pixel)."""
    try:
        return _pil().getmodebands(mode)
    except (KeyError, ValueError):
        return 4


def _pil():
    from PIL import Image  # lazy: only pipelines with image steps pay for Pillow

    return Image


def _imageops():
    from PIL import ImageOps  # lazy: only exif_transpose and keep_aspect pad/crop need it

    return ImageOps


class DecodeImage(Step):
    """Base64 text or raw bytes (any format Pillow reads) -> a Pillow image."""

    name, stages, image = "decode_image", (PRE,), True

    def setup(self):
        self.max_pixels = max_image_pixels()
        if self.max_pixels is None:
            raise ConfigurationError(f"MLFN_MAX_IMAGE_PIXELS is {os.environ.get('MLFN_MAX_IMAGE_PIXELS')!r}; "
                                     "set a positive number of pixels, or unset it for 40000000.")
        self.Image = _pil()
        self.draft_size = None  # set by Pipeline when a resize follows: JPEG DCT scaling

    def __call__(self, x):
        """Decode `x` (or load an image `open` returned) into pixels; 400 when it is no image."""
        img = x if isinstance(x, self.Image.Image) else self.open(x)
        try:
            img.load()
        except Exception as e:  # PIL raises OSError, SyntaxError, ... for broken images
            raise InvalidInput(f"is not an image Pillow can read ({e.__class__.__name__}: {e})") from None
        return img

    def open(self, x):
        """The image `x` holds, read from its header only (size, mode; JPEG drafted to the
        resize that follows): nothing is decoded yet, so its cost can be budgeted first."""
        Image = self.Image
        if isinstance(x, str):
            x = b64decode(x)
        elif isinstance(x, dict) and set(x) == {"b64"}:
            if not isinstance(x["b64"], str):
                raise InvalidInput(f"'b64' must be base64 text, not {kind(x['b64'])}")
            x = b64decode(x["b64"])
        if not isinstance(x, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"expected an encoded image (base64 text or bytes), got {kind(x)}")
        try:
            img = Image.open(io.BytesIO(x))
            if self.draft_size and img.format == "JPEG":
                img.draft(img.mode, self.draft_size)
            if img.width * img.height > self.max_pixels:  # before decoding: no memory blow-up
                raise InvalidInput(
                    f"image is {img.width}x{img.height} pixels; at most {self.max_pixels} are decoded (MLFN_MAX_IMAGE_PIXELS)"
                )
        except InvalidInput:
            raise
        except Image.DecompressionBombError as e:
            raise InvalidInput(f"image is too large to decode ({e})") from None
        except Image.UnidentifiedImageError:  # its message names a BytesIO at a heap address
            raise InvalidInput(f"is not an image: {describe_bytes(x)}") from None
        except Exception as e:  # PIL raises OSError, SyntaxError, ... for broken headers
            raise InvalidInput(f"is not an image Pillow can read ({e.__class__.__name__}: {e})") from None
        return img


def describe_bytes(data) -> str:
    """What was sent instead of an image, for messages: its size and how it starts."""
    data = bytes(data)
    if not data:
        return "it is empty (0 bytes)"
    text = data[:32].decode("utf-8", "replace").rstrip("\ufffd")  # a character cut at byte 32
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"{len(data)} bytes of text starting {text[:24]!r}"
    return f"{len(data)} bytes starting {data[:8].hex(' ')}, which no image format Pillow reads matches"


class ExifTranspose(Step):
    """Rotate/flip the image as its EXIF Orientation tag says."""

    name, stages, image = "exif_transpose", (PRE,), True

    def setup(self):
        _pil()
        self.ImageOps = _imageops()

    def __call__(self, img):
        return self.ImageOps.exif_transpose(img)

    def image_out(self, size: tuple, mode: str) -> tuple:
        """(size, mode, bytes held while it runs): the image and a transposed copy at most."""
        return size, mode, 2 * image_bytes(size, mode)


class Convert(Step):
    """Pillow mode conversion, e.g. `convert {mode: L}` for grayscale or `RGB`."""

    name, stages, image = "convert", (PRE,), True
    params = {"mode": Param(choice(PIL_MODES), required=True)}

    def setup(self):
        _pil()

    def __call__(self, img):
        if img.mode == self.mode:
            return img
        if self._composites(img.mode):
            # composite transparent images on white instead of black garbage in the RGB data
            Image = _pil()
            rgba = img if img.mode == "RGBA" else img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), rgba)
            del rgba  # the background went with the call: the composite alone is held on
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
            return self(img)
        return img.convert(self.mode)

    def _composites(self, mode: str) -> bool:
        return mode in ("RGBA", "LA", "PA") and self.mode in ("RGB", "L")

    def image_out(self, size: tuple, mode: str) -> tuple:
        """(size, mode, bytes held while it runs): the image and its conversion; compositing
        also holds an RGBA copy (unless already RGBA), a white background and the composite."""
        if mode == self.mode:
            return size, mode, image_bytes(size, mode)
        held = image_bytes(size, mode) + image_bytes(size, self.mode)
        if self._composites(mode) or mode == "P":  # P may carry transparency: the same path
            held += image_bytes(size, "RGBA") * (2 if mode == "RGBA" else 3)
        return size, self.mode, held


class Resize(Step):
    """Resize to width x height; `keep_aspect: pad` letterboxes, `crop` center-crops."""

    name, stages, image = "resize", (PRE,), True
    params = {
        "width": Param(positive_int, required=True),
        "height": Param(positive_int, required=True),
        "method": Param(choice(RESIZE_METHODS), default="bilinear"),
        "keep_aspect": Param(choice(KEEP_ASPECT), default="false"),
        "pad_value": Param(pad_value, default=0),
    }

    def setup(self):
        Image = _pil()
        self.ImageOps = _imageops() if self.keep_aspect != "false" else None
        R = Image.Resampling
        self.resample = {"bilinear": R.BILINEAR, "nearest": R.NEAREST, "bicubic": R.BICUBIC,
                         "lanczos": R.LANCZOS, "area": R.BOX}[self.method]

    def __call__(self, img):
        size = (self.width, self.height)
        if img.size == size:
            return img
        factors = self.reduction(img.size, img.mode)
        if factors != (1, 1):  # a huge shrink: box-reduce first (a 1x40M image took 5 s of CPU)
            img = img.reduce(factors)
        if self.keep_aspect == "crop":
            return self.ImageOps.fit(img, size, method=self.resample)
        if self.keep_aspect == "pad":
            color = self.pad_value
            if isinstance(color, tuple) and len(img.getbands()) == 1:
                color = color[0]
            elif isinstance(color, (int, float)) and len(img.getbands()) > 1:
                color = (color,) * len(img.getbands())
            if img.mode in ("F", "I") and isinstance(color, float):
                pass
            elif isinstance(color, tuple):
                color = tuple(int(c) for c in color)
            else:
                color = int(color)
            return self.ImageOps.pad(img, size, method=self.resample, color=color)
        return img.resize(size, self.resample)

    def reduction(self, size: tuple, mode: str) -> tuple:
        """Box-reduce factors (x, y) taken before resampling: a side that shrinks more than
        REDUCE_ABOVE times is first reduced to about 4x its target (as Pillow's
        `reducing_gap`); the same factor on both sides when the aspect ratio matters."""
        if self.method == "nearest" or mode not in REDUCIBLE_MODES:
            return 1, 1
        fx, fy = ((side // (4 * target) if side > REDUCE_ABOVE * target else 1)
                  for side, target in zip(size, (self.width, self.height)))
        if self.keep_aspect != "false":
            fx = fy = min(fx, fy)
        return max(1, fx), max(1, fy)

    def image_out(self, size: tuple, mode: str) -> tuple:
        """(size, mode, bytes held while it runs): the image, its box reduction, the resized
        one and Pillow's two-pass intermediate (new width, old height); crop also holds
        the cropped copy."""
        out = (self.width, self.height)
        fx, fy = self.reduction(size, mode)
        reduced = (-(-size[0] // fx), -(-size[1] // fy))
        held = image_bytes(size, mode) + image_bytes(out, mode) + image_bytes((self.width, reduced[1]), mode)
        if reduced != size:
            held += image_bytes(reduced, mode)
        if self.keep_aspect == "crop":
            held += image_bytes(reduced, mode)
        return out, mode, held


def b64decode(s: str) -> bytes:
    """Standard or URL-safe base64, with or without padding or a `data:...;base64,` prefix."""
    if s.startswith("data:") and "," in s[:200]:
        s = s.split(",", 1)[1]
    s = s.strip()
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("is not valid base64") from None
