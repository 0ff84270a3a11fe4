"""KMS calls as BYOK makes them: one-line refusals, and the key ARNs they act on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hsm_lab import errors


class ByokError(errors.ClefsError):
    """A BYOK step was refused (by us, before AWS, or by KMS)."""


def arn_region(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "kms" or not parts[5].startswith("key/"):
        raise errors.InputError(f"{arn!r} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")
    return parts[3]


def arn_key_id(arn: str) -> str:
    arn_region(arn)
    return arn.split(":")[5].removeprefix("key/")


def _aws(call: str, arn: str, action: Callable[[], Any]) -> Any:
    """Run one KMS call; its failure is one line naming the call, key and AWS error."""
    try:
        return action()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ByokError(
            f"KMS {call} on {arn} refused: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip()
        ) from None
    except BotoCoreError as exc:
        raise ByokError(f"KMS {call} on {arn} failed: {exc}") from None
