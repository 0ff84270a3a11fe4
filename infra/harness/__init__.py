"""Apply the real Clefs program to LocalStack without the Pulumi CLI.

The Pulumi CLI and its provider plugins cannot be installed here, so this
harness runs the actual program (`infra.program.stack.build`) under a Pulumi Mocks
implementation whose `new_resource` creates each resource in LocalStack with
boto3 and answers with the real ids and ARNs. LocalStack therefore receives
the program's own key policies, bucket policies, encryption, replication and
Object Lock settings. It supports exactly the resource types the program
uses and fails loudly on any other; it refuses any endpoint that is not
loopback. Where the Pulumi CLI exists, `infra.deploy` runs a real `pulumi up`.

As strict as `pulumi up` (docs/infra.md, "The LocalStack harness"):

* LocalStack ignores the Policy and Tags given to ReplicateKey (the replica keeps the
  primary's policy, docs/localstack.md): after ReplicateKey the harness applies the
  replica's own policy and tags with PutKeyPolicy and TagResource;
* the replication rule keeps its empty ``filter {}`` (a V2 rule; real S3 rejects the rule
  without it);
* with a state file (``state_path``), a second apply of the same stack reconciles what exists
  (re-applies every input) and creates nothing twice; resources of the state that vanished (a
  restarted LocalStack keeps no state) are recreated and reported as such;
* an alias, bucket or role that already exists and is not in this stack's state fails the
  apply, as `pulumi up` would.

The package: ``run`` (apply, stack_config, summary), ``localstack_mocks`` (LocalStackMocks),
one module per service with a Kind per resource type (``kms``, ``iam``, ``s3``, ``alarms``:
create, exists, reconcile), ``state`` (the state file) and ``common`` (the error, the loopback
rule, AWS shapes). Every public name is importable from ``infra.harness`` itself.
"""

from __future__ import annotations

from infra.harness.common import ClientFactory, HarnessError, Kind, is_loopback_url, to_s3_shape
from infra.harness.localstack_mocks import KINDS, LocalStackMocks
from infra.harness.run import REPO_ROOT, apply, stack_config, summary
from infra.harness.state import STATE_FORMAT, load_state, save_state

__all__ = [
    "KINDS",
    "REPO_ROOT",
    "STATE_FORMAT",
    "ClientFactory",
    "HarnessError",
    "Kind",
    "LocalStackMocks",
    "apply",
    "is_loopback_url",
    "load_state",
    "save_state",
    "stack_config",
    "summary",
    "to_s3_shape",
]
