"""The files of a `multipart/form-data` body (`curl -F file=@cat.jpg`), parsed with the
standard library's MIME parser: every part with a filename is one file, in order."""

from __future__ import annotations

import email.parser
import email.policy


class FormError(ValueError):
    """A form the server refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def files(body: bytes, content_type: str, max_files: int) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every file part; a `FormError` for a body that is not a form
    with 1 to `max_files` files, or that has a field which is not a file."""
    boundary = _boundary(content_type)
    # Counted before parsing: a body of many tiny parts is refused at the cost of one scan,
    # never parsed part by part (which takes seconds per thousand).
    parts = body.count(b"--" + boundary) - 1
    if parts > max_files:
        raise FormError(413, f"more than {max_files} parts (--max-batch)")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise FormError(400, "not a multipart/form-data body with a file (send -F file=@image.png)")
    found: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        if filename is None:
            raise FormError(422, f"form field {name!r} is not a file (send -F file=@image.png)")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            raise FormError(422, f"file {filename!r} is empty")
        found.append((str(filename), payload))
    if not found:
        raise FormError(422, "the form holds no file (send -F file=@image.png)")
    return found


def _boundary(content_type: str) -> bytes:
    """The form's boundary (RFC 2046: 1 to 70 characters); a `FormError` without one."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if 0 < len(value) <= 70:
                return value.encode("latin-1", "replace")
    raise FormError(400, "multipart/form-data without a boundary")
