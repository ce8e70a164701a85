"""Typed reads of config.json values, with errors that name the field.

Every section of the spec goes through these, so that a wrong type anywhere
gives `config.json: <field> must be <what>` rather than a Python exception.
"""

from __future__ import annotations

from runproc.errors import RunprocError

# uid_t and gid_t are 32-bit; (uid_t)-1 means "unchanged" to the kernel.
MAX_ID = 2**32 - 2


def want(value: object, kind: type, where: str, what: str) -> None:
    """Fail unless `value` is a `kind`; bool is an int subclass, but a spec's `true` is never a number."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RunprocError(f"config.json: {where} must be {what}")


def optional(container: dict, key: str, kind: type, where: str, what: str, default: object) -> object:
    """container[key] if present and not null (checked against `kind`), else `default`."""
    value = container.get(key)
    if value is None:
        return default
    want(value, kind, where, what)
    return value


def os_string(value: str, where: str) -> str:
    """A string the kernel can take: no NUL byte, encodable (JSON may carry lone surrogates)."""
    if "\0" in value:
        raise RunprocError(f"config.json: {where} contains a NUL byte")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise RunprocError(f"config.json: {where} is not valid text: {value!r}") from None
    return value


def string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RunprocError(f"config.json: {where} must be a list of strings")
    return [os_string(item, f"{where}[{n}]") for n, item in enumerate(value)]


def id_value(value: object, where: str) -> int:
    """A uid or gid."""
    want(value, int, where, f"an integer from 0 to {MAX_ID}")
    assert isinstance(value, int)
    if not 0 <= value <= MAX_ID:
        raise RunprocError(f"config.json: {where} must be an integer from 0 to {MAX_ID}")
    return value
