"""Codecs: bytes -> image frames (PNG, JPEG, TIFF, DICOM), masks -> bytes.

Importing the package registers the DICOM decoder when the `dicom` extra
(pydicom) is installed, so that what a DICOM file decodes to never depends
on whether a service has started in this process. The service re-registers
it at start with its model card's window (app/main.py, ``install_dicom``).
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("pydicom") is not None:
    from app.codecs.dicom import dicom_format
    from app.codecs.images import register

    register(dicom_format())
