"""Log lines of the service: text or one JSON object per line, ``fields`` as key=value.

No image content and no DICOM attribute values ever go into a log line; what a
request adds (sizes, timings) comes from ``request.state.log`` (app/api/segment.py).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", {})
        return line + "".join(f" {k}={v}" for k, v in fields.items()) if fields else line


def configure_logging(log_format: str, level: str = "info") -> None:
    """``app.*`` loggers to stderr as text or JSON; uvicorn's access log off (ours replaces it)."""
    logger = logging.getLogger("app")
    handler = next((h for h in logger.handlers if getattr(h, "unet", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.unet = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    text = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    logger.setLevel(level.upper())
    logger.propagate = False
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if log_format == "json":  # uvicorn's own lines from here on (shutdown, errors) too
        for uvicorn_handler in logging.getLogger("uvicorn").handlers:
            uvicorn_handler.setFormatter(JsonFormatter())
