"""The gateway's settings: environment variables with the prefix ``UNET_`` (API.md, "DICOM
gateway for any PACS"), validated once at start-up; a bad one stops it with one line."""

from __future__ import annotations

import ipaddress
import re
import socket
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# AE titles: up to 16 characters of the default character repertoire, no backslash.
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


@dataclass(frozen=True)
class Caller:
    """An allowed calling AE, optionally only from one host (``AE`` or ``AE@host``)."""

    ae_title: str
    host: str | None = None

    def admits(self, ae_title: str, host: str, resolve: Resolve | None = None) -> bool:
        """``host`` is the caller's address; this one's host an address or a name, whose
        addresses ``resolve`` gives (the listener's are looked up beforehand, in a thread
        of their own: an association never waits on DNS; None: looked up now)."""
        if ae_title.strip() != self.ae_title:
            return False
        return self.host is None or self.host == host or same_host(self.host, host, resolve)


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], Collection[Address]]


def address(text: str) -> Address | None:
    """An IP address (an IPv4-mapped IPv6 one as IPv4), else None (a host name)."""
    try:
        found = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    mapped = getattr(found, "ipv4_mapped", None)  # ::ffff:10.1.2.3 on a dual-stack socket
    return mapped or found


def lookup(name: str) -> frozenset[Address]:
    """The addresses a host name resolves to now; none when it does not resolve."""
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(a for info in found if (a := address(str(info[4][0]))) is not None)


def same_host(allowed: str, peer: str, resolve: Resolve | None = None) -> bool:
    """Whether the address ``peer`` is the host ``allowed`` (an address, or a name and
    any address it resolves to); a name that does not resolve admits no one."""
    seen = address(peer)
    if seen is None:
        return False
    if address(allowed) is not None:
        return address(allowed) == seen
    return seen in (resolve or lookup)(allowed)


@dataclass(frozen=True)
class Destination:
    """Where results go: a C-STORE SCP (``AE@host:port``) or a STOW-RS ``.../studies`` URL."""

    name: str  # as configured, for logs and metrics (no patient data in it)
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    @property
    def is_dicomweb(self) -> bool:
        return bool(self.url)


def parse_destination(text: str) -> Destination:
    text = text.strip()
    if text.startswith(("http://", "https://")):
        return Destination(name=text, url=text.rstrip("/"))
    found = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>[^:@]+):(?P<port>\d{1,5})", text)
    if not found or not AE_TITLE.match(found["ae"]) or not 0 < int(found["port"]) < 65536:
        raise ValueError(
            f"destination {text!r} is neither AE@host:port (AE: 1-16 characters) nor an "
            "http(s)://.../studies DICOMweb URL"
        )
    return Destination(text, found["ae"], found["host"], int(found["port"]))


def parse_caller(text: str) -> Caller:
    ae, _, host = text.strip().partition("@")
    if not AE_TITLE.match(ae):
        raise ValueError(f"allowed caller {text!r}: an AE title is 1-16 characters, no '\\'")
    return Caller(ae, host or None)


# What a series may give, in the order asked and sent: the SEG, and the SR that measures it.
RESULTS = {"seg": "dicom-seg", "sr": "dicom-sr"}


def _items(value: object) -> object:
    return [part for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class GatewaySettings(BaseSettings):
    """``UNET_*`` variables of the gateway."""

    model_config = SettingsConfigDict(env_prefix="UNET_", extra="ignore", frozen=True)

    service_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    dicom_ae_title: str = "UNET"
    dicom_port: int = Field(11112, ge=0, lt=65536)
    dicom_host: str = "0.0.0.0"
    dicom_allowed: Annotated[list[Caller], NoDecode] = []
    dicom_destinations: Annotated[list[Destination], NoDecode] = []
    dicom_results: Annotated[list[str], NoDecode] = ["seg", "sr"]
    dicom_stable_seconds: float = Field(10.0, ge=0)
    dicom_state_dir: Path = Path(tempfile.gettempdir()) / "unet-dicom-gateway"
    dicom_max_associations: int = Field(10, ge=1)
    dicom_http_port: int | None = Field(None, ge=0, lt=65536)
    dicom_service_timeout: float = Field(600.0, gt=0)
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None
    log_format: str = Field("text", pattern="^(text|json)$")
    log_level: str = "info"

    @field_validator("dicom_ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        if not AE_TITLE.match(value):
            raise ValueError(f"an AE title is 1-16 characters without '\\', got {value!r}")
        return value

    @field_validator("dicom_allowed", mode="before")
    @classmethod
    def _allowed(cls, value: object) -> object:
        items = _items(value)
        return [parse_caller(v) if isinstance(v, str) else v for v in items]  # type: ignore[attr-defined]

    @field_validator("dicom_destinations", mode="before")
    @classmethod
    def _destinations(cls, value: object) -> object:
        items = _items(value)
        return [parse_destination(v) if isinstance(v, str) else v for v in items]  # type: ignore[attr-defined]

    @field_validator("dicom_results", mode="before")
    @classmethod
    def _results(cls, value: object) -> object:
        items = [str(v).strip().lower() for v in _items(value)]  # type: ignore[attr-defined]
        unknown = sorted(set(items) - set(RESULTS))
        if unknown or "seg" not in items:
            raise ValueError(
                f"UNET_DICOM_RESULTS is a comma list of {' and '.join(RESULTS)} with seg in it "
                f"(the SR measures the SEG's segments), got {','.join(items)!r}"
            )
        return [r for r in RESULTS if r in items]  # each once, the SEG first

    @model_validator(mode="after")
    def _tls(self) -> GatewaySettings:
        """TLS all or nothing: a certificate without its key (or a CA alone) would otherwise
        leave the listener on plain TCP while the operator believes it encrypted."""
        cert, key, ca = self.dicom_tls_cert, self.dicom_tls_key, self.dicom_tls_ca
        if (cert is None) != (key is None) or (ca is not None and cert is None):
            raise ValueError(
                "UNET_DICOM_TLS_CERT and UNET_DICOM_TLS_KEY go together (UNET_DICOM_TLS_CA "
                "only with them); got "
                + ", ".join(n for n, v in (("CERT", cert), ("KEY", key), ("CA", ca)) if v)
            )
        return self

    def admits(self, ae_title: str, host: str, resolve: Resolve | None = None) -> bool:
        """Whether a calling AE (from ``host``) may associate: any when none is configured."""
        allowed = self.dicom_allowed
        return not allowed or any(c.admits(ae_title, host, resolve) for c in allowed)

    def allowed_host_names(self) -> list[str]:
        """The allow-list's hosts given by name (not by address)."""
        names = {c.host for c in self.dicom_allowed if c.host and address(c.host) is None}
        return sorted(names)
