"""Domain exceptions of the codecs (bytes <-> images and masks).

Messages say what was wrong and what is accepted -- never pixel values or
DICOM attribute values. ``app/errors.py`` maps each class to its HTTP status.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class of every codec error."""


class EmptyInputError(CodecError):
    """No bytes at all (400)."""


class NotAnImageError(CodecError):
    """Bytes that are no image format at all: random, PDF, HTML, ZIP (400)."""


class CorruptImageError(CodecError):
    """A recognised format whose data is truncated or corrupt (400)."""


class UnsupportedFormatError(CodecError):
    """A recognised container the service does not decode: GIF, BMP, WebP, ... (415)."""


class ImageTooLargeError(CodecError):
    """Width x height x frames above the configured limit, known from the header (413)."""


class DicomNoPixelDataError(UnsupportedFormatError):
    """A DICOM object that holds no image: RT plan, structured report, ECG (415)."""


class DicomTransferSyntaxError(UnsupportedFormatError):
    """A DICOM image whose transfer syntax (compression) cannot be decoded here (415)."""


class DicomSeriesError(CodecError):
    """Several DICOM instances that are not one consistent series (422)."""


class DicomSegError(CodecError):
    """DICOM SEG cannot be written for this input, e.g. multi-frame without plane positions.

    The request itself is fine (422): the other output formats (``rle``) still work.
    """


class OutputError(CodecError):
    """An output format that cannot be made for this request (the options or the input)."""


class UnsupportedOutputError(OutputError):
    """An output format the input cannot have, e.g. dicom-seg for a PNG (415)."""


class FrameCountError(OutputError):
    """A multi-frame input asked for a single-frame output format (422)."""


class OptionError(OutputError):
    """An option out of the range the model allows, e.g. ``class`` (422)."""
