"""No patient data in a log line, from the libraries either: the warnings of pydicom and
highdicom that would quote an attribute's value are switched off. The DICOM codec does it
at import, the gateway's listener when it is made."""

from __future__ import annotations

import warnings

from pydicom import config as pydicom_config

PERSON_NAME_WARNING = r"The string .* is unlikely to represent"  # highdicom, quotes the name


def quiet_value_warnings() -> None:
    """pydicom quotes an invalid value (an invalid UID, say) in its validation warnings, both
    as a warning and in its logger, which Python's last-resort handler prints to stderr;
    highdicom quotes the patient's name when it has no "^". Values are passed through as
    they are, so neither check is needed here."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    warnings.filterwarnings("ignore", message=PERSON_NAME_WARNING, category=UserWarning)
