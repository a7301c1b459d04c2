"""Formats recognised by their first bytes (magic numbers), for the input registry
(app/codecs/images.py) and the readers that must tell a format before they open it."""

from __future__ import annotations

JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def is_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def is_jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def is_tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}  # fmt: skip


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 (``DICM`` at offset 128), or a bare dataset without preamble.

    A bare dataset must open with an element of group 0002 or 0008 (the first groups
    of every image) in either byte order, followed by a valid explicit VR or, for
    implicit VR little endian, a plausible value length: about 1 in 10^9 random heads
    pass, and no PNG/JPEG/TIFF/GIF/PDF/ZIP signature does.
    """
    if head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    if head[:2] in (b"\x02\x00", b"\x08\x00"):  # little endian
        return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") <= 1024
    return head[:2] in (b"\x00\x02", b"\x00\x08") and head[4:6] in _VRS  # explicit big endian


def is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def is_bmp(head: bytes) -> bool:
    # "BM", then a DIB header whose size (offset 14) is one of the known ones.
    return head[:2] == b"BM" and head[14:18] in {
        n.to_bytes(4, "little") for n in (12, 16, 40, 52, 56, 64, 108, 124)
    }


def is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"avis")
