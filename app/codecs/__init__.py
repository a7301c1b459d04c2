"""Codecs: bytes and files <-> arrays (images in, masks and other outputs out), no HTTP.

Registries are built per app at start-up (``images.default_decoders`` with the
model card's DICOM window, ``outputs.default_outputs``); nothing registers
itself at import.
"""
