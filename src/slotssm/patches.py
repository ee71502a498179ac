"""Images <-> non-overlapping patches: the one patchify/unpatchify of the library, for numpy and torch alike.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Here C is channels, height x width an image, (ph, pw) the patch sides
and M = (height / ph) * (width / pw) patches per image.

One layout convention, the model pipeline's: images are channels-first (..., C, height, width), as the encoders
read frames (B, T, C, height, width) and the decoders' images come out. Patches are (..., M, ph * pw * C): row-major
over the image (left to right, then top to bottom), and inside a patch pixels row-major with the channels last.
`channels_last=True` reads or writes (..., height, width, C) images instead (the arrays of the data generators,
e.g. Blinking Color Balls' frames (n, T, H, W, 3)), with the same patch order and the same pixel order inside a
patch. The long sequence of the long-context task (§7.2: T frames -> T * M steps of one patch each) is
`patchify(frames, p, channels_last=True)` (..., T, M, p * p * C) with its T and M axes merged by the caller.

Why here, on the ground floor with `config`: both `slotssm.data` (numpy arrays, no torch modules) and
`slotssm.vision` / the tasks (tensors) cut images into patches, and this is pure array reshaping (einops, which
dispatches on numpy and torch), so it imports nothing of the project and any floor may import it.
"""

from __future__ import annotations

from typing import Any

from einops import rearrange

__all__ = ["patchify", "unpatchify"]

_CHANNELS_FIRST = "... c (h ph) (w pw)"
_CHANNELS_LAST = "... (h ph) (w pw) c"
_PATCHES = "... (h w) (ph pw c)"


def _pair(x: int | tuple[int, int], name: str) -> tuple[int, int]:
    ph, pw = (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))
    if ph < 1 or pw < 1:
        raise ValueError(f"{name}: expected positive sides, got {x!r}")
    return ph, pw


def patchify(images: Any, patch_size: int | tuple[int, int], *, channels_last: bool = False) -> Any:
    """images (..., C, height, width) -> patches (..., M, ph * pw * C); numpy or torch.

    patch_size: side or (ph, pw), dividing height and width. channels_last: images are (..., height, width, C).
    """
    ph, pw = _pair(patch_size, "patch_size")
    layout = "(..., height, width, C)" if channels_last else "(..., C, height, width)"
    if images.ndim < 3:
        raise ValueError(f"images: expected shape {layout}, got {tuple(images.shape)}")
    height, width = images.shape[-3:-1] if channels_last else images.shape[-2:]
    if height % ph or width % pw:
        raise ValueError(f"images: expected shape {layout} with sides divisible by patch_size {(ph, pw)}, "
                         f"got {tuple(images.shape)}")
    pattern = f"{_CHANNELS_LAST if channels_last else _CHANNELS_FIRST} -> {_PATCHES}"
    return rearrange(images, pattern, ph=ph, pw=pw)


def unpatchify(patches: Any, image_size: int | tuple[int, int], patch_size: int | tuple[int, int],
               channels: int | None = None, *, channels_last: bool = False) -> Any:
    """Inverse of `patchify`: patches (..., M, ph * pw * C) -> images (..., C, height, width); numpy or torch.

    image_size: height (= width) or (height, width). channels: C (default: inferred from the last axis).
    channels_last: return (..., height, width, C).
    """
    (height, width), (ph, pw) = _pair(image_size, "image_size"), _pair(patch_size, "patch_size")
    h, w = height // ph, width // pw
    c = patches.shape[-1] // (ph * pw) if channels is None else channels
    if patches.ndim < 2 or tuple(patches.shape[-2:]) != (h * w, ph * pw * c) or height % ph or width % pw:
        raise ValueError(f"patches: expected shape (..., {h * w}, {ph * pw * c}) for {(height, width)} images in "
                         f"{(ph, pw)} patches, got {tuple(patches.shape)}")
    pattern = f"{_PATCHES} -> {_CHANNELS_LAST if channels_last else _CHANNELS_FIRST}"
    return rearrange(patches, pattern, h=h, w=w, ph=ph, pw=pw)
