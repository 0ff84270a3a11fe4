"""A small, strict evaluator for KMS key policies and S3 bucket policies.

It is the oracle behind the separation-of-duties and bucket-policy rules: they check what a
policy *does* for probe requests, not how it is spelled.

Scope: one policy, one principal ARN, one action, a flat request context. It implements
the KMS semantics that matter here: explicit Deny wins; an Allow for the account root only
grants what the principal's own IAM policies also grant (`iam_allows`); Action/NotAction with
wildcards; the condition operators used in Clefs policies (and their ...IfExists forms).
Anything it does not understand raises ValueError, so it can never be silently lenient.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ALLOW, DENY, IMPLICIT_DENY = "allow", "explicit-deny", "implicit-deny"
_ROOT_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):root$")
_ACCOUNT_RE = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):")


@dataclass(frozen=True)
class Request:
    principal: str
    action: str
    context: Mapping[str, str] = field(default_factory=dict)
    iam_allows: bool = False  # the principal's IAM policies grant this action (worst case: True)
    resource: str | None = None  # None: a key policy (statements must use Resource "*")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    raise ValueError(f"expected a string or a list, got {type(value).__name__}")


def _account_of(arn: str) -> str | None:
    m = _ACCOUNT_RE.match(arn)
    return m.group(1) if m else None


def _principal_matches(principal: Any, request: Request, effect: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        raise ValueError(f"unsupported Principal {principal!r}")
    for kind, values in principal.items():
        if kind != "AWS":
            if kind == "Service":
                if request.principal in _as_list(values):
                    return True
                continue
            raise ValueError(f"unsupported principal kind {kind!r}")
        for value in _as_list(values):
            if value == "*" or value == request.principal:
                return True
            root = _ROOT_RE.match(value)
            if root and _account_of(request.principal) == root.group(1):
                # Allow to root = delegation to IAM; Deny to root = every principal of the account.
                if effect == "Deny" or request.iam_allows:
                    return True
    return False


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    def hit(patterns: Any) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in _as_list(patterns))

    if "Action" in statement and "NotAction" in statement:
        raise ValueError("statement has both Action and NotAction")
    if "Action" in statement:
        return hit(statement["Action"])
    if "NotAction" in statement:
        return not hit(statement["NotAction"])
    raise ValueError("statement has neither Action nor NotAction")


def _resource_matches(statement: Mapping[str, Any], resource: str | None) -> bool:
    if "NotResource" in statement:
        raise ValueError("NotResource is not supported")
    patterns = _as_list(statement.get("Resource", "*"))
    if resource is None:
        if patterns != ["*"]:
            raise ValueError("key policy statements must use Resource '*'")
        return True
    return any(fnmatch.fnmatchcase(resource, p) for p in patterns)


def _string_eq(actual: str, wanted: str) -> bool:
    return actual == wanted


def _like(actual: str, wanted: str) -> bool:
    return fnmatch.fnmatchcase(actual, wanted)


def _bool_eq(actual: str, wanted: str) -> bool:
    return actual.lower() == str(wanted).lower()


def _num_lt(actual: str, wanted: str) -> bool:
    return float(actual) < float(wanted)


_POSITIVE = {
    "StringEquals": _string_eq,
    "StringLike": _like,
    "ArnEquals": _like,
    "ArnLike": _like,
    "Bool": _bool_eq,
    "NumericLessThan": _num_lt,
}
_NEGATED = {
    "StringNotEquals": _string_eq,
    "StringNotLike": _like,
    "ArnNotEquals": _like,
    "ArnNotLike": _like,
}


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    values = [str(v) for v in _as_list(wanted)]
    if operator == "Null":
        if len(values) != 1 or values[0].lower() not in ("true", "false"):
            raise ValueError(f"Null condition on {key} needs 'true' or 'false'")
        return (key not in context) == (values[0].lower() == "true")
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    present = key in context
    if base in _POSITIVE:
        if not present:
            return if_exists
        return any(_POSITIVE[base](context[key], v) for v in values)
    if base in _NEGATED:
        if not present:
            return True
        return not any(_NEGATED[base](context[key], v) for v in values)
    raise ValueError(f"unsupported condition operator {operator!r}")


def _conditions_hold(statement: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    condition = statement.get("Condition") or {}
    if not isinstance(condition, Mapping):
        raise ValueError("Condition must be a mapping")
    for operator, pairs in condition.items():
        if not isinstance(pairs, Mapping):
            raise ValueError(f"Condition {operator} must map keys to values")
        for key, wanted in pairs.items():
            if not _condition_holds(operator, key, wanted, context):
                return False
    return True


def evaluate(policy: Mapping[str, Any], request: Request) -> str:
    """Decision of a KMS key policy for `request`: ALLOW, DENY or IMPLICIT_DENY."""
    context = {"aws:PrincipalArn": request.principal, **dict(request.context)}
    allowed = False
    for statement in _as_list(policy.get("Statement")):
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise ValueError(f"unsupported Effect {effect!r}")
        if not _principal_matches(statement.get("Principal"), request, effect):
            continue
        if not _action_matches(statement, request.action):
            continue
        if not _resource_matches(statement, request.resource):
            continue
        if not _conditions_hold(statement, context):
            continue
        if effect == "Deny":
            return DENY
        allowed = True
    return ALLOW if allowed else IMPLICIT_DENY


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    return evaluate(policy, request) == ALLOW
