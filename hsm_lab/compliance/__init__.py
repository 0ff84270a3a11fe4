"""`verify`: what is protected how, proved from live state (LocalStack or AWS).

For each data class and region of the deployed stack (its outputs say which keys, buckets and
roles exist) it reads S3 and KMS, never the Pulumi program, and *evaluates* every claim:

- at rest: default encryption is SSE-KMS under the class key with bucket keys, and every stored
  object version really is SSE-KMS under that key (each one is read);
- uploads: the bucket policy, run through the project's IAM evaluator (policy/iam.py), denies
  PutObject without SSE, with SSE-S3, with SSE-KMS and no key or another key, and lets the app
  role's PutObject under the class key through;
- in transit: the same evaluator denies plain HTTP and TLS 1.0/1.1 for GetObject and PutObject,
  for the app role, another role and another account, and lets TLS 1.2 through;
- key (L1): Enabled, EXTERNAL (BYOK), material imported, its expiry;
- key policy: read in the key's region and checked with the policy pack's own rules
  (policy.rules.key_policy_findings: separation of duties, no wildcard principal, no
  unconditioned Decrypt, PutKeyPolicy not open);
- end to end: every object version (paginated, up to --max-objects) starts with a well-formed
  clefs envelope naming this class, its own record id, one of the class keys, and the
  end-to-end layer the class requires (headers are checked, not decrypted);
- replication: the primary's rule (enabled, whole bucket, replica key, SSE-KMS objects), and
  what is really in the replica bucket: every version of the primary, byte-identical header,
  stored under the replica key;
- public access blocked (all four switches) and versioning on.

Each cell says where its truth comes from (docs/verify.md): ``observed`` (read from live state
and checked), ``configured`` (read and evaluated, but the emulator does not enforce it:
LocalStack enforces no bucket or key policy and no public access block, docs/localstack.md),
or ``not checked``. Every failed check is a gap; `verify` exits non-zero and names each one.
"""

from hsm_lab.compliance.assess import assess, scan_buckets
from hsm_lab.compliance.at_rest import (
    check_at_rest,
    check_default_encryption,
    check_end_to_end,
    check_public_access,
    check_versioning,
)
from hsm_lab.compliance.in_transit import TLS12, check_in_transit, check_uploads, probe_bucket_policy
from hsm_lab.compliance.keys import check_key, check_key_policy
from hsm_lab.compliance.replication import check_replica_content, check_replication_rule
from hsm_lab.compliance.report import (
    CHECKS,
    DEFAULT_MAX_OBJECTS,
    FOREIGN_ACCOUNT,
    NOT_ENFORCED_BY_LOCALSTACK,
    SCHEMA,
    WORKERS,
    Cell,
    ClientFactory,
    Report,
    Row,
)
from hsm_lab.compliance.scan import HEADER_BYTES, Scan, Stored, list_versions, read_stored

__all__ = [
    "CHECKS",
    "DEFAULT_MAX_OBJECTS",
    "FOREIGN_ACCOUNT",
    "HEADER_BYTES",
    "NOT_ENFORCED_BY_LOCALSTACK",
    "SCHEMA",
    "TLS12",
    "WORKERS",
    "Cell",
    "ClientFactory",
    "Report",
    "Row",
    "Scan",
    "Stored",
    "assess",
    "check_at_rest",
    "check_default_encryption",
    "check_end_to_end",
    "check_in_transit",
    "check_key",
    "check_key_policy",
    "check_public_access",
    "check_replica_content",
    "check_replication_rule",
    "check_uploads",
    "check_versioning",
    "list_versions",
    "probe_bucket_policy",
    "read_stored",
    "scan_buckets",
]
