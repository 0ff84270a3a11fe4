"""BYOK: class keys (L1) derived in the HSM, wrapped in the HSM, imported into KMS.

For each data class and key version, the L1 material is derived inside the
HSM from the master key (see `hsm.class_key_derivation_data`). To import it
into a KMS key:

1. GetParametersForImport gives a KMS wrapping public key and an import token;
2. the SO installs that public key in the HSM as a TRUSTED wrapping key (only
   TRUSTED keys may wrap WRAP_WITH_TRUSTED keys, and only the SO sets TRUSTED);
3. the user derives the class key from L0 and the HSM wraps it under that key:
   RSAES_OAEP_SHA_1 directly, or RSA_AES_KEY_WRAP_SHA_256 composed as
   OAEP-SHA-256 (in Python) of an ephemeral TRUSTED AES key + AES-KWP (RFC 5649,
   in the HSM) of the class key, because SoftHSM2's OAEP is SHA-1 only. The
   wrapping key and the class key are *session objects* of one export
   (`HSM.export_session`): nothing is stored on the token, and a kill at any
   point leaves nothing behind. The class key never leaves the HSM in the clear;
   L0 is not extractable at all, so no TRUSTED key can wrap it;
4. ImportKeyMaterial, with an optional expiry.

The same material goes into the primary (Paris) and its replica (Frankfurt);
before any AWS call for a replica the material is checked against what was
imported into its primary (class, version, KCV). Every step is in the
transcript, and what was imported where is read back from the verified
transcript (byok.json is only a copy of it for people and tools).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from hsm_lab import errors, txn
from hsm_lab.byok.kms import ByokError, _aws, arn_region
from hsm_lab.byok.records import ImportRecord, _now, read_records, save_copy
from hsm_lab.byok.records import check_replica_material as _check_replica_material
from hsm_lab.byok.records import check_same_material as _check_same_material
from hsm_lab.byok.wrap import (
    WRAPPING_ALGORITHMS,
    WRAPPING_KEY_SPECS,
    ImportParameters,
    check_wrapping_key,
    compose_rsa_aes,
)
from hsm_lab.ceremony.record import Record
from hsm_lab.faults import fault
from hsm_lab.fs import wipe
from hsm_lab.hsm import HSM, class_key_label
from hsm_lab.lab import MASTER_LABEL, Lab
from infra.model.settings import DEFAULT_PRIMARY_REGION


class Byok:
    """BYOK for one lab's HSM token against KMS clients per region."""

    def __init__(
        self,
        hsm: HSM,
        lab: Lab,
        *,
        token: str,
        user_pin: str,
        so_pin: str,
        kms_for: Callable[[str], Any],
        app_kms_for: Callable[[str], Any] | None = None,
        auditor_kms_for: Callable[[str], Any] | None = None,
        primary_region: str = DEFAULT_PRIMARY_REGION,
        actor: str = "operator",
        master_label: str = MASTER_LABEL,
    ) -> None:
        self.hsm = hsm
        self.lab = lab
        self.token = token
        self._user_pin = user_pin
        self._so_pin = so_pin
        # One client per role (docs/aws.md): the ceremony imports, the app proves by using the
        # key, the auditor reads its state. On LocalStack one identity plays all three.
        self.kms_for = kms_for
        self.app_kms_for = app_kms_for or kms_for
        self.auditor_kms_for = auditor_kms_for or kms_for
        self.actor = actor
        self.master_label = master_label
        self.primary_region = primary_region
        self.warnings: list[str] = []
        self.wrapping_keys: list[tuple[str, str]] = []  # (key ARN, wrapping key SHA-256), printed by the CLI

    def role_of(self, key_arn: str) -> str:
        """Primary or replica, from the stack's primary region (no AWS call)."""
        return "primary" if arn_region(key_arn) == self.primary_region else "replica"

    # -- records -------------------------------------------------------------------

    @property
    def records_path(self) -> Any:
        return self.lab.root / "byok.json"

    def records(self) -> list[ImportRecord]:
        """What was imported where, from the verified transcript (not from byok.json)."""
        return read_records(self.lab)

    def _save_copy(self) -> None:
        save_copy(self.records_path, self.records())

    def _log(self, action: str, params: dict[str, Any]) -> None:
        with self.hsm.session(self.token, user_pin=self._user_pin) as session:
            record = Record.open(self.lab, session, actor=self.actor)
            self.warnings.extend(record.warnings)
            record.append(self.actor, action, params)

    # -- steps ---------------------------------------------------------------------

    def derive(self, data_class: str, version: int) -> str:
        """Derive the class key in the HSM (a session object, gone after this call); its KCV."""
        with self.hsm.session(self.token, user_pin=self._user_pin) as session:
            record = Record.open(self.lab, session, actor=self.actor)
            self.warnings.extend(record.warnings)
            record.require_signer()
            kcv = session.kcv(session.derive_class_key(self.master_label, data_class, version))
            record.append(
                self.actor,
                "byok.derive",
                {
                    "data_class": data_class,
                    "version": version,
                    "label": class_key_label(data_class, version),
                    "kcv": kcv,
                    "token": self.token,
                },
            )
        return kcv

    def check_replica_material(self, key_arn: str, data_class: str, version: int, kcv: str) -> None:
        """Refuse, before any AWS call, replica material that differs from its primary's."""
        _check_replica_material(key_arn, data_class, version, kcv, self.records)

    def check_same_material(self, key_arn: str, data_class: str, version: int, kcv: str) -> None:
        """A KMS key takes only the material it first got (AWS enforces it; LocalStack does not)."""
        _check_same_material(key_arn, data_class, version, kcv, self.records)

    def get_parameters(
        self, key_arn: str, wrapping_algorithm: str = "RSAES_OAEP_SHA_1", wrapping_key_spec: str = "RSA_2048"
    ) -> ImportParameters:
        if wrapping_algorithm not in WRAPPING_ALGORITHMS:
            raise errors.InputError(
                f"wrapping algorithm {wrapping_algorithm!r} is not supported here: use one of "
                f"{', '.join(WRAPPING_ALGORITHMS)} (SoftHSM2's OAEP is SHA-1 only)"
            )
        if wrapping_key_spec not in WRAPPING_KEY_SPECS:
            raise errors.InputError(f"wrapping key spec must be one of {', '.join(WRAPPING_KEY_SPECS)}")
        kms = self.kms_for(arn_region(key_arn))
        answer = _aws(
            "GetParametersForImport",
            key_arn,
            lambda: kms.get_parameters_for_import(
                KeyId=key_arn,
                WrappingAlgorithm=wrapping_algorithm,
                WrappingKeySpec=wrapping_key_spec,
            ),
        )
        params = ImportParameters(
            key_arn=key_arn,
            wrapping_algorithm=wrapping_algorithm,
            wrapping_key_spec=wrapping_key_spec,
            public_key=answer["PublicKey"],
            import_token=answer["ImportToken"],
            valid_to=answer["ParametersValidTo"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        check_wrapping_key(params)  # before it is recorded, before the HSM wraps anything
        self._log(
            "byok.get-parameters",
            {
                "key_arn": key_arn,
                "wrapping_algorithm": wrapping_algorithm,
                "wrapping_key_spec": wrapping_key_spec,
                "wrapping_key_sha256": params.fingerprint,
                "parameters_valid_to": params.valid_to,
            },
        )
        self.wrapping_keys.append((key_arn, params.fingerprint))
        return params

    def wrap(self, params: ImportParameters, data_class: str, version: int) -> tuple[bytes, str]:
        """Wrap the class key for KMS inside the HSM; (wrapped material, its KCV).

        One export session: the SO makes the TRUSTED wrapping key, the user derives
        the class key and wraps it; both are session objects, so the token holds
        nothing afterwards, whatever happens (kill -9 included).
        """
        check_wrapping_key(params)
        transport: bytearray | None = None
        try:
            with self.hsm.export_session(self.token, user_pin=self._user_pin, so_pin=self._so_pin) as export:
                transport = export.install_wrapping_key(params.wrapping_algorithm, params.public_key)
                fault("byok:so-done")
                with export.user() as session:
                    class_key = session.derive_class_key(self.master_label, data_class, version)
                    kcv = session.kcv(class_key)
                    fault("byok:derived")
                    wrapped = export.wrap(session, class_key, params.wrapping_algorithm)
                    fault("byok:wrapped")
            if transport is None:
                return wrapped, kcv
            return compose_rsa_aes(params, transport, wrapped), kcv
        finally:
            wipe(transport)

    def import_material(
        self,
        params: ImportParameters,
        key_arn: str,
        data_class: str,
        version: int,
        *,
        kcv: str,
        role: str,
        valid_to: datetime | None = None,
    ) -> ImportRecord:
        if params.key_arn != key_arn:
            raise ByokError(
                f"the import token is for {params.key_arn}, not {key_arn}: get parameters for this key "
                "(tokens are per key and per region)"
            )
        intent = txn.begin(
            self.lab.root, "byok.import", self.token, [], about=f"{data_class} v{version} -> {key_arn}"
        )
        wrapped = self._wrap_checked(intent, params, data_class, version, kcv)
        kms = self.kms_for(params.region)
        request: dict[str, Any] = {
            "KeyId": key_arn,
            "ImportToken": params.import_token,
            "EncryptedKeyMaterial": wrapped,
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
        }
        if valid_to is not None:
            if valid_to <= datetime.now(UTC):
                intent.finish()
                raise errors.InputError(f"expiry {valid_to.isoformat()} is in the past")
            request.update(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
        try:
            _aws("ImportKeyMaterial", key_arn, lambda: kms.import_key_material(**request))
        except BaseException:
            intent.finish()
            raise
        fault("byok:imported")
        record = _new_record(params, key_arn, data_class, version, kcv=kcv, role=role, valid_to=valid_to)
        self._log("byok.import", {**asdict(record), "txn": intent.txn})
        intent.finish()
        self._save_copy()
        return record

    def _wrap_checked(
        self, intent: txn.Intent, params: ImportParameters, data_class: str, version: int, kcv: str
    ) -> bytes:
        """`wrap`, and its KCV must be the derived one; on any failure the import's intent is finished."""
        try:
            wrapped, wrapped_kcv = self.wrap(params, data_class, version)
        except BaseException:
            intent.finish()
            raise
        if wrapped_kcv != kcv:
            intent.finish()
            raise ByokError(
                f"the HSM wrapped material with KCV {wrapped_kcv}, not the derived {kcv}; nothing sent"
            )
        return wrapped

    def import_class(
        self,
        data_class: str,
        version: int,
        key_arns: list[str],
        *,
        wrapping_algorithm: str = "RSAES_OAEP_SHA_1",
        valid_to: datetime | None = None,
    ) -> list[ImportRecord]:
        """Derive once, then import the same material into the primary, then each replica."""
        kcv = self.derive(data_class, version)
        records = []
        ordered = sorted(key_arns, key=lambda arn: self.role_of(arn) != "primary")
        for key_arn in ordered:
            role = self.role_of(key_arn)
            if role == "replica":
                self.check_replica_material(key_arn, data_class, version, kcv)
            self.check_same_material(key_arn, data_class, version, kcv)
            params = self.get_parameters(key_arn, wrapping_algorithm)
            records.append(
                self.import_material(
                    params,
                    key_arn,
                    data_class,
                    version,
                    kcv=kcv,
                    role=role,
                    valid_to=valid_to,
                )
            )
        return records

    def prove(self, data_class: str, encrypt_arn: str, decrypt_arn: str, probe: bytes | None = None) -> bool:
        """Encrypt under one region's key, decrypt under the other's: same material."""
        context = {"data_class": data_class}
        probe = probe or secrets.token_bytes(32)
        source = self.app_kms_for(arn_region(encrypt_arn))
        target = self.app_kms_for(arn_region(decrypt_arn))
        blob = _aws(
            "Encrypt",
            encrypt_arn,
            lambda: source.encrypt(
                KeyId=encrypt_arn,
                Plaintext=probe,
                EncryptionContext=context,
            ),
        )["CiphertextBlob"]
        plain = _aws(
            "Decrypt",
            decrypt_arn,
            lambda: target.decrypt(
                KeyId=decrypt_arn,
                CiphertextBlob=blob,
                EncryptionContext=context,
            ),
        )["Plaintext"]
        ok = secrets.compare_digest(plain, probe)
        self._log(
            "byok.prove",
            {
                "data_class": data_class,
                "encrypt": encrypt_arn,
                "decrypt": decrypt_arn,
                "same_material": ok,
            },
        )
        if not ok:
            raise ByokError(f"{decrypt_arn} decrypted to other bytes than {encrypt_arn} encrypted")
        return ok

    def revoke(self, key_arn: str, data_class: str) -> str:
        """Revocation drill: delete the imported material, then show decrypt is refused."""
        region = arn_region(key_arn)
        kms, app, auditor = self.kms_for(region), self.app_kms_for(region), self.auditor_kms_for(region)
        context = {"data_class": data_class}
        blob = _aws(
            "Encrypt",
            key_arn,
            lambda: app.encrypt(
                KeyId=key_arn,
                Plaintext=b"revocation drill",
                EncryptionContext=context,
            ),
        )["CiphertextBlob"]
        _aws("DeleteImportedKeyMaterial", key_arn, lambda: kms.delete_imported_key_material(KeyId=key_arn))
        state = _aws("DescribeKey", key_arn, lambda: auditor.describe_key(KeyId=key_arn))["KeyMetadata"][
            "KeyState"
        ]
        try:
            app.decrypt(KeyId=key_arn, CiphertextBlob=blob, EncryptionContext=context)
        except ClientError as exc:
            refusal: str = exc.response.get("Error", {}).get("Code", "refused")
        else:
            raise ByokError(f"{key_arn} still decrypts after DeleteImportedKeyMaterial")
        self._log(
            "byok.revoke",
            {
                "key_arn": key_arn,
                "data_class": data_class,
                "key_state": state,
                "decrypt": refusal,
            },
        )
        return refusal


def _new_record(
    params: ImportParameters,
    key_arn: str,
    data_class: str,
    version: int,
    *,
    kcv: str,
    role: str,
    valid_to: datetime | None,
) -> ImportRecord:
    """The record of one import into `key_arn`, stamped now."""
    return ImportRecord(
        data_class=data_class,
        version=version,
        key_arn=key_arn,
        region=params.region,
        role=role,
        kcv=kcv,
        wrapping_algorithm=params.wrapping_algorithm,
        expires=valid_to.strftime("%Y-%m-%dT%H:%M:%SZ") if valid_to else None,
        imported=_now(),
    )
