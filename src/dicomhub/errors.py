"""The domain error tree.

Errors are raised by the core and the services with a human-readable reason. Each transport
(web, DIMSE, CLI) translates them once, in its own table (``web/errors.py`` for HTTP). No HTTP
status or DIMSE status lives here: the classes name *what* went wrong, not how an edge reports it.
Reasons must never contain PHI (patient names, IDs); UIDs are allowed.
"""

from __future__ import annotations


class DicomhubError(Exception):
    """Base of every error the core raises on purpose."""

    def __init__(self, reason: str, **context: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # Identifiers that help an edge report the failure (e.g. SOP Class/Instance UID for a
        # STOW-RS FailedSOPSequence item). Never PHI.
        self.context: dict[str, str] = dict(context)


class InvalidInput(DicomhubError):
    """The request or its parameters are malformed (bad UID, bad query parameter, ...)."""


class InvalidDicom(DicomhubError):
    """A DICOM object cannot be parsed or violates a rule we enforce (PS3.10, PS3.5)."""


class UnsupportedMediaType(DicomhubError):
    """The request body's media type is not one we accept (PS3.18 §8.7)."""


class NotAcceptable(DicomhubError):
    """No representation satisfies the request's Accept header (PS3.18 §8.7.3)."""


class NotFound(DicomhubError):
    """The resource does not exist, or exists in a tenant the caller cannot see."""


class Conflict(DicomhubError):
    """The request conflicts with stored data (e.g. same SOP Instance UID, different content)."""


class PayloadTooLarge(DicomhubError):
    """A body, part or instance exceeds a configured bound."""


class NotRenderable(InvalidDicom):
    """An instance has no image to render, or its pixel data cannot be decoded (PS3.18 §10.4)."""


class StudyMismatch(InvalidDicom):
    """An instance posted to ``/studies/{study}`` belongs to another study (PS3.18 §10.5.1)."""


class RemoteFailure(DicomhubError):
    """A remote application entity answered a DIMSE request with a failure status (PS3.7 C).

    Permanent: asking again would get the same answer (unlike :class:`Unavailable`: no
    association, or the peer is out of resources).
    """


class Unavailable(DicomhubError):
    """A dependency (index, blob store) is temporarily unavailable; the client may retry."""


class IntegrityError(DicomhubError):
    """Stored data is inconsistent (missing blob, checksum mismatch). Never the client's fault."""
