"""The one error hierarchy of kimen (SPEC §2.8, §2.9).

Every failure a user can see is a subclass of `KimenError` that declares:

- ``reason``: a stable snake_case machine name, never renamed;
- ``code``: the fixed exit code of SPEC §2.8, or ``None`` for a command-area reason whose exit
  code is that of the command that raised it (§2.9);
- its docstring: the default message template (``str.format`` over the error's fields);
- optionally ``hint``: a fix, printed as ``kimen: hint: …``.

Messages start lowercase, have no final period, name the thing (secret name, path, line) and never
carry a value, passphrase, token or identity. Raise the precise class where the failure is known;
never recover a reason by matching message text. The daemon sends ``{reason, message, …}`` and the
client re-raises ``error_class(reason)``, so the CLI has one handler for local and remote failures.

This module imports nothing but the standard library's typing: it sits at the bottom of the layers.
"""

from __future__ import annotations

TYPE_CHECKING = False  # avoid importing typing on the hot path
if TYPE_CHECKING:
    from typing import Any, ClassVar

# Exit codes of command areas (SPEC §2.8): a reason without a fixed code takes the code of the
# command that raised it.
AREA_SECRET = 11
AREA_MAP_LINT = 20
AREA_PLAN = 21
AREA_ENVFILE = 22
AREA_RUN = 23
AREA_VAULT = 24
AREA_BUNDLE = 25
AREA_CONFIG = 26
AREA_DOCTOR = 27
AREA_REMOTE = 30
AREA_SYNC = 32
AREA_INIT = 33
AREA_SESSION = 34

_REGISTRY: dict[str, type[KimenError]] = {}

# Fields that go into the JSON error envelope (SPEC §2.7 names them). Other fields only fill the
# message template.
CONTEXT_FIELDS = frozenset({
    "secret", "path", "line", "missing", "existing", "denied", "name", "variable", "signer",
    "generation", "expected_rev", "actual_rev", "recommended_action", "conflict_keys", "command",
    "status", "grant_id", "remote", "vault", "lock_path", "lock_age", "lock_owner", "issues",
})


class KimenError(Exception):
    """kimen failed"""

    reason: ClassVar[str] = ""
    code: ClassVar[int | None] = None
    hint: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reason:
            if cls.reason in _REGISTRY:
                raise TypeError(f"duplicate reason {cls.reason!r}")
            _REGISTRY[cls.reason] = cls

    def __init__(self, message: str | None = None, *, hint: str | None = None, **fields: Any) -> None:
        self.fields = fields
        if message is None:
            template = (type(self).__doc__ or "").strip()
            try:
                message = template.format(**fields)
            except (KeyError, IndexError, ValueError):
                message = template
        self.message = message
        self.hint_text = hint if hint is not None else type(self).hint
        super().__init__(message)

    def exit_code(self, area_code: int) -> int:
        """The code this error exits with when raised by a command of `area_code`."""
        return self.code if self.code is not None else area_code

    def envelope(self, area_code: int) -> dict[str, Any]:
        """The JSON error envelope of SPEC §2.7 (fields are only ever added)."""
        doc: dict[str, Any] = {
            "ok": False,
            "error": self.message,
            "exit_code": self.exit_code(area_code),
            "reason": self.reason,
        }
        if self.hint_text:
            doc["hint"] = self.hint_text
        for key, value in self.fields.items():
            if key in CONTEXT_FIELDS:
                doc.setdefault(key, value)
        return doc


def error_class(reason: str) -> type[KimenError]:
    """The class registered for `reason`; unknown reasons (a newer peer) map to a protocol error."""
    return _REGISTRY.get(reason, SessionProtocolError)


def all_error_classes() -> list[type[KimenError]]:
    """Every concrete error class, in definition order (used by docs and tests)."""
    return list(_REGISTRY.values())


def _names(names: Any) -> str:
    return ", ".join(names) if isinstance(names, (list, tuple)) else str(names)


# --------------------------------------------------------------------------------------------
# Fixed codes (SPEC §2.8)
# --------------------------------------------------------------------------------------------


class InternalError(KimenError):
    """internal error ({type})"""

    reason = "internal_error"
    code = 1
    hint = "this is a bug in kimen; rerun with --debug for a traceback and report it"


class UsageError(KimenError):
    """{detail}"""

    reason = "usage_error"
    code = 2


class Interrupted(KimenError):
    """interrupted"""

    reason = "interrupted"
    code = 130


# -- passphrase (10) --


class MissingPassphrase(KimenError):
    """no passphrase available"""

    reason = "missing_passphrase"
    code = 10
    hint = (
        "set KIMEN_PASSPHRASE, pass --passphrase-cmd or --passphrase-stdin, start a session "
        "(kimen session start), configure an unlock method (kimen config unlock set), or run in a terminal"
    )


class EmptyPassphrase(KimenError):
    """the passphrase is empty"""

    reason = "empty_passphrase"
    code = 10


class PassphraseMismatch(KimenError):
    """the passphrases do not match"""

    reason = "passphrase_mismatch"
    code = 10


class PassphraseCommandFailed(KimenError):
    """the passphrase command failed ({status})"""

    reason = "passphrase_command_failed"
    code = 10


class EmptyPassphraseCommand(KimenError):
    """the passphrase command is empty"""

    reason = "empty_passphrase_command"
    code = 10


class MissingNewPassphrase(KimenError):
    """no new passphrase available"""

    reason = "missing_new_passphrase"
    code = 10
    hint = "set KIMEN_NEW_PASSPHRASE, pass --new-passphrase-cmd or --new-passphrase-stdin, or run in a terminal"


class EmptyNewPassphrase(KimenError):
    """the new passphrase is empty"""

    reason = "empty_new_passphrase"
    code = 10


class NewPassphraseMismatch(KimenError):
    """the new passphrases do not match"""

    reason = "new_passphrase_mismatch"
    code = 10


class NewPassphraseUnchanged(KimenError):
    """the new passphrase equals the old one"""

    reason = "new_passphrase_unchanged"
    code = 10
    hint = "choose a different passphrase, change the --kdf-* parameters, or pass --rotate-data-key"


class ConflictingPassphraseSources(KimenError):
    """several new-passphrase sources are set"""

    reason = "conflicting_passphrase_sources"
    code = 10


# -- secrets and vault data (12-15) --


class SecretNotFound(KimenError):
    """secret not found: {names}"""

    reason = "secret_not_found"
    code = 12

    def __init__(self, missing: list[str], **kw: Any) -> None:
        missing = sorted(missing)
        super().__init__(names=_names(missing), **kw)
        self.fields = {"missing": missing, **{k: v for k, v in kw.items() if k != "hint"}}


class SecretExists(KimenError):
    """secret already exists: {names}"""

    reason = "secret_exists"
    code = 13

    def __init__(self, existing: list[str], **kw: Any) -> None:
        existing = sorted(existing)
        super().__init__(names=_names(existing), **kw)
        self.fields = {"existing": existing, **{k: v for k, v in kw.items() if k != "hint"}}


class VaultNotFound(KimenError):
    """vault not found: {path}"""

    reason = "vault_not_found"
    code = 14
    hint = "create one with `kimen vault init`, or select another with --vault or KIMEN_VAULT"


class WrongPassphrase(KimenError):
    """wrong passphrase or damaged key record"""

    reason = "wrong_passphrase"
    code = 15


class SecretCorrupt(KimenError):
    """secret {secret} failed authentication (tampered or damaged)"""

    reason = "secret_corrupt"
    code = 15


class VaultTampered(KimenError):
    """vault integrity check failed: rows were added, removed or rolled back"""

    reason = "vault_tampered"
    code = 15


# -- vault file (24) --


class InvalidVaultFile(KimenError):
    """not a kimen vault: {path}"""

    reason = "invalid_vault_file"
    code = 24


class VaultUnsupported(KimenError):
    """vault format is newer than this kimen understands: {path}"""

    reason = "vault_unsupported"
    code = 24
    hint = "upgrade kimen"


class KdfParamsRejected(KimenError):
    """stored KDF parameters are outside the accepted range: {path}"""

    reason = "kdf_params_rejected"
    code = 24


class VaultBusy(KimenError):
    """vault is busy (another kimen is writing): {path}"""

    reason = "vault_busy"
    code = 24
    hint = "retry in a moment"


class VaultReadOnly(KimenError):
    """vault is read-only: {path}"""

    reason = "vault_read_only"
    code = 24


class DiskFull(KimenError):
    """no space left on the device holding {path}"""

    reason = "disk_full"
    code = 24


# -- config (26) --


class InvalidConfigJson(KimenError):
    """config file is not valid JSON: {path}"""

    reason = "invalid_config_json"
    code = 26


class ConfigPathUnavailable(KimenError):
    """cannot determine the config location"""

    reason = "config_path_unavailable"
    code = 26


# -- sync conflicts (31) --


class RemoteChanged(KimenError):
    """remote changed since the last sync"""

    reason = "remote_changed"
    code = 31


class NoLocalBaseline(KimenError):
    """remote has a bundle but this vault has no baseline for it"""

    reason = "no_local_baseline"
    code = 31


class RemoteDisappeared(KimenError):
    """remote bundle disappeared"""

    reason = "remote_disappeared"
    code = 31


class OverlappingChanges(KimenError):
    """local and remote changed the same keys: {names}"""

    reason = "overlapping_changes"
    code = 31


class RemoteRollback(KimenError):
    """remote bundle is older than one already accepted"""

    reason = "remote_rollback"
    code = 31


# -- session daemon (34) --


class SessionUnavailable(KimenError):
    """no session daemon is running"""

    reason = "session_unavailable"
    code = 34
    hint = "start one with `kimen session start`"


class SessionLocked(KimenError):
    """session is locked for {vault}"""

    reason = "session_locked"
    code = 34
    hint = "unlock it with `kimen session start`"


class SessionDirUnsafe(KimenError):
    """session directory is unsafe: {path} ({problem})"""

    reason = "session_dir_unsafe"
    code = 34


class SocketPathTooLong(KimenError):
    """session socket path is too long: {path}"""

    reason = "socket_path_too_long"
    code = 34
    hint = "set KIMEN_SESSION_DIR to a shorter directory"


class DaemonStartFailed(KimenError):
    """session daemon failed to start"""

    reason = "daemon_start_failed"
    code = 34


class SessionProtocolError(KimenError):
    """session protocol error"""

    reason = "session_protocol_error"
    code = 34


class SessionVersionMismatch(KimenError):
    """session daemon runs another kimen version"""

    reason = "session_version_mismatch"
    code = 34
    hint = "restart it with `kimen session start`"


class FrameTooLarge(KimenError):
    """session frame too large"""

    reason = "frame_too_large"
    code = 34


class InvalidTtl(KimenError):
    """invalid TTL: {detail}"""

    reason = "invalid_ttl"
    code = 34
    hint = "use a duration such as 90s, 15m, 1h30m or 7d (ttl <= max-ttl <= 7d)"


class SessionUnsupported(KimenError):
    """sessions are not supported on this platform"""

    reason = "session_unsupported"
    code = 34


class AuditUnavailable(KimenError):
    """audit log cannot be written"""

    reason = "audit_unavailable"
    code = 34


# -- grants (35) --


class GrantRequired(KimenError):
    """this session requires a grant token"""

    reason = "grant_required"
    code = 35
    hint = "set KIMEN_SESSION_TOKEN to a token from `kimen session grant`"


class GrantDenied(KimenError):
    """grant does not cover: {names}"""

    reason = "grant_denied"
    code = 35


class GrantExpired(KimenError):
    """grant expired"""

    reason = "grant_expired"
    code = 35


class GrantInvalid(KimenError):
    """grant token is invalid"""

    reason = "grant_invalid"
    code = 35


# -- run start failures (126/127) --


class CommandNotExecutable(KimenError):
    """command not executable: {command}"""

    reason = "command_not_executable"
    code = 126


class CommandNotFound(KimenError):
    """command not found: {command}"""

    reason = "command_not_found"
    code = 127


# --------------------------------------------------------------------------------------------
# Command-area reasons (SPEC §2.9): the exit code is the raising command's.
# --------------------------------------------------------------------------------------------

# -- secret --


class InvalidSecretName(KimenError):
    """invalid secret name: {name}"""

    reason = "invalid_secret_name"
    hint = "names are dot-separated segments of [A-Za-z0-9_-], 1-128 bytes, not starting with '-'"


class EmptySecretName(KimenError):
    """secret name is empty"""

    reason = "empty_secret_name"


class SameSecretName(KimenError):
    """old and new names are the same: {name}"""

    reason = "same_secret_name"


class UnsafeStdoutRequired(KimenError):
    """refusing to print secret values without --unsafe-stdout"""

    reason = "unsafe_stdout_required"


class EmptySecretValue(KimenError):
    """secret value is empty"""

    reason = "empty_secret_value"


class MissingSecretValue(KimenError):
    """no value given for {name}"""

    reason = "missing_secret_value"
    hint = "pass --stdin, --from-file PATH, --from-env VAR or --value TEXT, or run in a terminal"


class ConflictingValueSources(KimenError):
    """give exactly one value source"""

    reason = "conflicting_value_sources"


class ConflictingStdinInputs(KimenError):
    """stdin cannot carry both the passphrase and another input"""

    reason = "conflicting_stdin_inputs"


class ValueSourceFailed(KimenError):
    """cannot read the value: {detail}"""

    reason = "value_source_failed"


class SecretTooLarge(KimenError):
    """secret value exceeds 1 MiB"""

    reason = "secret_too_large"


class InvalidFingerprint(KimenError):
    """fingerprint must be 64 hex digits"""

    reason = "invalid_fingerprint"


class FingerprintMismatch(KimenError):
    """value does not match the expected fingerprint"""

    reason = "fingerprint_mismatch"


class SecretConfirmationMismatch(KimenError):
    """the values do not match"""

    reason = "secret_confirmation_mismatch"


class InvalidDotenv(KimenError):
    """invalid dotenv line {line}: {detail}"""

    reason = "invalid_dotenv"


class SecretFailed(KimenError):
    """secret command failed: {detail}"""

    reason = "secret_failed"


# -- vault --


class VaultExists(KimenError):
    """vault already exists: {path}"""

    reason = "vault_exists"


class ConflictingBackupOptions(KimenError):
    """--no-backup and --backup-dir cannot be combined"""

    reason = "conflicting_backup_options"


class BackupFailed(KimenError):
    """backup failed: {detail}"""

    reason = "backup_failed"


class InvalidKdfParams(KimenError):
    """invalid KDF parameters: {detail}"""

    reason = "invalid_kdf_params"


class VaultFailed(KimenError):
    """vault operation failed: {detail}"""

    reason = "vault_failed"


# -- config --


class UnknownUnlockMethod(KimenError):
    """unknown unlock method: {method}"""

    reason = "unknown_unlock_method"
    hint = "use prompt, env, stdin or exec"


class MissingUnlockExecCommand(KimenError):
    """unlock method exec needs a command after --"""

    reason = "missing_unlock_exec_command"
    hint = "kimen config unlock set exec -- CMD ARGS..."


class MissingVaultPath(KimenError):
    """missing vault path"""

    reason = "missing_vault_path"


class ConfigFailed(KimenError):
    """config command failed: {detail}"""

    reason = "config_failed"


# -- session --


class GrantScopeEmpty(KimenError):
    """grant scope is empty"""

    reason = "grant_scope_empty"


class GrantNotFound(KimenError):
    """grant not found: {grant_id}"""

    reason = "grant_not_found"


class AuditLogUnreadable(KimenError):
    """audit log is unreadable: {path}"""

    reason = "audit_log_unreadable"


# -- projection --


class MissingCommand(KimenError):
    """missing command; use `kimen {command} -- <command>`"""

    reason = "missing_command"


class ConflictingMapProfileInputs(KimenError):
    """use either --map or --profile, not both"""

    reason = "conflicting_map_profile_inputs"


class ConflictingSourceInputs(KimenError):
    """use either --bundle or --vault, not both"""

    reason = "conflicting_source_inputs"


class InvalidProfileName(KimenError):
    """invalid profile name: {name}"""

    reason = "invalid_profile_name"


class ProfileNotFound(KimenError):
    """profile not found: {name}"""

    reason = "profile_not_found"


class MapUnreadable(KimenError):
    """cannot read map: {path}"""

    reason = "map_unreadable"


class InvalidMap(KimenError):
    """{path}:{line}: {detail}"""

    reason = "invalid_map"


class IncludeCycle(KimenError):
    """include cycle: {chain}"""

    reason = "include_cycle"


class IncludeNotFound(KimenError):
    """{path}:{line}: include not found: {name}"""

    reason = "include_not_found"


class DuplicateStdin(KimenError):
    """more than one stdin directive"""

    reason = "duplicate_stdin"


class InvalidMapping(KimenError):
    """invalid mapping: {detail}"""

    reason = "invalid_mapping"


class InvalidEnvVar(KimenError):
    """invalid environment variable name: {name}"""

    reason = "invalid_env_var"


class ReservedEnvVar(KimenError):
    """environment variable name is reserved for kimen: {name}"""

    reason = "reserved_env_var"


class InvalidRelativePath(KimenError):
    """invalid relative path: {detail}"""

    reason = "invalid_relative_path"


class EnvpathRequiresProjectedFiles(KimenError):
    """envpath {name} needs a file directive, and the profile projects no files"""

    reason = "envpath_requires_projected_files"


class EnvpathMissingProjectedFile(KimenError):
    """envpath {name} names a file that no file directive projects: {relpath}"""

    reason = "envpath_missing_projected_file"


class ExecSourceFailed(KimenError):
    """exec source failed: {detail}"""

    reason = "exec_source_failed"


class InvalidEnvValue(KimenError):
    """value of {name} contains a NUL byte"""

    reason = "invalid_env_value"


class ValueTooLargeForEnv(KimenError):
    """value of {name} is too large for an environment variable"""

    reason = "value_too_large_for_env"
    hint = "project it as a file with `file` and `envpath`"


class EnvironmentTooLarge(KimenError):
    """environment and arguments exceed the system limit"""

    reason = "environment_too_large"


class UnsafeFilesDir(KimenError):
    """unsafe files directory: {path} ({problem})"""

    reason = "unsafe_files_dir"


class UnsafeOutputDir(KimenError):
    """unsafe output directory: {path} ({problem})"""

    reason = "unsafe_output_dir"


class UnsafeOutputPath(KimenError):
    """unsafe output path: {path} ({problem})"""

    reason = "unsafe_output_path"


class WriteFailed(KimenError):
    """write failed: {detail}"""

    reason = "write_failed"


class ConflictingRenderTargetInputs(KimenError):
    """use either --dir or --systemd-service, not both"""

    reason = "conflicting_render_target_inputs"


class MissingRenderTarget(KimenError):
    """missing render target; use --dir DIR or --systemd-service NAME"""

    reason = "missing_render_target"


class SystemdHintsRequiresService(KimenError):
    """--print-systemd-hints requires --systemd-service"""

    reason = "systemd_hints_requires_service"


class InvalidSystemdService(KimenError):
    """invalid systemd service name: {name}"""

    reason = "invalid_systemd_service"


class MissingEnvMappings(KimenError):
    """no environment variables to write"""

    reason = "missing_env_mappings"


class MissingFilesDirForEnvpath(KimenError):
    """--envpath needs --files-dir"""

    reason = "missing_files_dir_for_envpath"


class ValueNotRepresentable(KimenError):
    """value of {name} cannot be represented in {format} format"""

    reason = "value_not_representable"


class InvalidMode(KimenError):
    """invalid mode: {mode}"""

    reason = "invalid_mode"
    hint = "use run, render or envfile"


class ConflictingAgainstInputs(KimenError):
    """use either --against-profile or --against-map, not both"""

    reason = "conflicting_against_inputs"


class InvalidAgainstSpec(KimenError):
    """invalid comparison profile: {detail}"""

    reason = "invalid_against_spec"


class ProjectionFailed(KimenError):
    """projection failed: {detail}"""

    reason = "projection_failed"


class PlanFailed(KimenError):
    """plan failed: {detail}"""

    reason = "plan_failed"


class EnvfileFailed(KimenError):
    """envfile failed: {detail}"""

    reason = "envfile_failed"


# -- bundle --


class MissingOut(KimenError):
    """missing --out"""

    reason = "missing_out"


class MissingIn(KimenError):
    """missing --in"""

    reason = "missing_in"


class MissingRecipient(KimenError):
    """no recipients given"""

    reason = "missing_recipient"
    hint = "pass --recipient age1... or --recipients-file FILE"


class MissingIdentityInput(KimenError):
    """no identity given; use --identity FILE or --identity-stdin"""

    reason = "missing_identity_input"


class InputMissing(KimenError):
    """input file not found: {path}"""

    reason = "input_missing"


class IdentityExists(KimenError):
    """identity file already exists: {path}"""

    reason = "identity_exists"
    hint = "use --overwrite to replace it"


class OutputVaultExists(KimenError):
    """output vault already exists: {path}"""

    reason = "output_vault_exists"
    hint = "use --overwrite to make it mirror the bundle"


class InvalidRecipient(KimenError):
    """invalid recipient: {detail}"""

    reason = "invalid_recipient"


class InvalidIdentity(KimenError):
    """invalid identity: {detail}"""

    reason = "invalid_identity"


class MissingIdentityFile(KimenError):
    """identity file not found: {path}"""

    reason = "missing_identity_file"


class NoIdentityFound(KimenError):
    """no identity found in {source}"""

    reason = "no_identity_found"


class MultipleIdentitiesFound(KimenError):
    """more than one identity found in {source}"""

    reason = "multiple_identities_found"


class RecipientsFileContainsIdentity(KimenError):
    """{path}:{line}: recipients file contains a secret identity"""

    reason = "recipients_file_contains_identity"
    hint = "list public recipients (age1...) only; remove the identity and rotate it"


class BundleInvalid(KimenError):
    """invalid bundle: {detail}"""

    reason = "bundle_invalid"


class BundleNotADocument(KimenError):
    """decrypted payload is not a kimen bundle document"""

    reason = "bundle_not_a_document"


class BundleUnsupported(KimenError):
    """unsupported bundle: {detail}"""

    reason = "bundle_unsupported"


class BundleNoMatch(KimenError):
    """no identity matches the bundle's recipients"""

    reason = "bundle_no_match"


class BundleDecryptFailed(KimenError):
    """bundle decryption failed (damaged or tampered)"""

    reason = "bundle_decrypt_failed"


class BundleTooLarge(KimenError):
    """bundle exceeds the size limit"""

    reason = "bundle_too_large"


class AgeWorkFactorRejected(KimenError):
    """age scrypt work factor {work_factor} exceeds the limit of 20"""

    reason = "age_work_factor_rejected"


class MissingSigningIdentity(KimenError):
    """no identity to sign the bundle with"""

    reason = "missing_signing_identity"
    hint = "pass --identity FILE (or --no-sign to seal an unsigned bundle)"


class BundleUnsigned(KimenError):
    """bundle is not signed"""

    reason = "bundle_unsigned"
    hint = "pass --allow-unsigned to accept it anyway"


class BundleSignatureInvalid(KimenError):
    """bundle signature is invalid"""

    reason = "bundle_signature_invalid"


class BundleSignerUntrusted(KimenError):
    """bundle signer is not trusted: {signer}"""

    reason = "bundle_signer_untrusted"
    hint = "pin the signer with --trusted-signer, KIMEN_TRUSTED_SIGNERS or config bundle.trusted_signers"


class InvalidSigner(KimenError):
    """invalid signer id: {detail}"""

    reason = "invalid_signer"


class BundleReplay(KimenError):
    """bundle generation {generation} is older than one already accepted ({high})"""

    reason = "bundle_replay"
    hint = "pass --allow-older to accept an older bundle deliberately"


class BundleExpired(KimenError):
    """bundle is older than --max-age"""

    reason = "bundle_expired"


class BundleFailed(KimenError):
    """bundle command failed: {detail}"""

    reason = "bundle_failed"


# -- remote --


class EmptyRemoteName(KimenError):
    """remote name is empty"""

    reason = "empty_remote_name"


class InvalidRemoteName(KimenError):
    """invalid remote name: {name}"""

    reason = "invalid_remote_name"


class RemoteNotFound(KimenError):
    """remote not found: {name}"""

    reason = "remote_not_found"


class RemoteExists(KimenError):
    """remote already exists: {name}"""

    reason = "remote_exists"


class UnsupportedRemoteType(KimenError):
    """unsupported remote type: {type}"""

    reason = "unsupported_remote_type"


class MissingRemoteSetFields(KimenError):
    """nothing to change; pass at least one field"""

    reason = "missing_remote_set_fields"


class ConflictingDeriveFlags(KimenError):
    """--derive-recipient and --no-derive-recipient cannot be combined"""

    reason = "conflicting_derive_flags"


class ConflictingDeriveRecipientInputs(KimenError):
    """--derive-recipient cannot be combined with explicit recipients"""

    reason = "conflicting_derive_recipient_inputs"


class MissingIdentityForRecipientDerivation(KimenError):
    """--derive-recipient needs --identity"""

    reason = "missing_identity_for_recipient_derivation"


class RecipientDerivationFailed(KimenError):
    """cannot derive a recipient from the identity"""

    reason = "recipient_derivation_failed"


class GitFieldsRequireGitType(KimenError):
    """--branch and --bundle-path require --type git"""

    reason = "git_fields_require_git_type"


class MissingPath(KimenError):
    """missing --path"""

    reason = "missing_path"


class EmptyPath(KimenError):
    """path is empty"""

    reason = "empty_path"


class RemoteFailed(KimenError):
    """remote command failed: {detail}"""

    reason = "remote_failed"


# -- sync --


class RemoteMissing(KimenError):
    """remote has no bundle"""

    reason = "remote_missing"


class LocalVaultMissing(KimenError):
    """local vault is missing"""

    reason = "local_vault_missing"


class ReconcileBaselineMissing(KimenError):
    """reconcile needs a baseline; pull first"""

    reason = "reconcile_baseline_missing"


class NoOverlappingConflicts(KimenError):
    """there are no overlapping conflicts to resolve"""

    reason = "no_overlapping_conflicts"


class ResolveKeyNotConflict(KimenError):
    """not a conflict: {names}"""

    reason = "resolve_key_not_conflict"


class RemoteLockPresent(KimenError):
    """remote is locked by another push"""

    reason = "remote_lock_present"


class RemoteRecipientMissing(KimenError):
    """remote has no recipients"""

    reason = "remote_recipient_missing"


class RemoteIdentityMissing(KimenError):
    """remote has no identity"""

    reason = "remote_identity_missing"


class ManualPullRequired(KimenError):
    """local changes since the last sync; a fast-forward pull is not possible"""

    reason = "manual_pull_required"
    hint = "use --reconcile"


class LockMissing(KimenError):
    """no remote lock present"""

    reason = "lock_missing"


class LockTooNew(KimenError):
    """remote lock is newer than --if-older-than"""

    reason = "lock_too_new"


class UnlockConfirmationRequired(KimenError):
    """pass --yes to remove the remote lock"""

    reason = "unlock_confirmation_required"


class UnlockRequiresFsRemote(KimenError):
    """sync unlock works on fs remotes only"""

    reason = "unlock_requires_fs_remote"


class LockFlagsRequireFsRemote(KimenError):
    """lock flags work on fs remotes only"""

    reason = "lock_flags_require_fs_remote"


class ConflictingDryRunLockFlags(KimenError):
    """--dry-run cannot be combined with lock flags"""

    reason = "conflicting_dry_run_lock_flags"


class ConflictingCheckAndDryRun(KimenError):
    """--check and --dry-run cannot be combined"""

    reason = "conflicting_check_and_dry_run"


class InvalidStaleThreshold(KimenError):
    """invalid --stale-threshold: {detail}"""

    reason = "invalid_stale_threshold"


class InvalidLockWait(KimenError):
    """invalid --lock-wait: {detail}"""

    reason = "invalid_lock_wait"


class InvalidBreakStaleLockAfter(KimenError):
    """invalid --break-stale-lock-after: {detail}"""

    reason = "invalid_break_stale_lock_after"


class InvalidIfOlderThan(KimenError):
    """invalid --if-older-than: {detail}"""

    reason = "invalid_if_older_than"


class RemoteNotFoundFromEnv(KimenError):
    """KIMEN_REMOTE names an unknown remote: {name}"""

    reason = "remote_not_found_from_env"


class NoRemotesConfigured(KimenError):
    """no remotes configured"""

    reason = "no_remotes_configured"


class MultipleRemotesConfigured(KimenError):
    """several remotes configured; pass --remote"""

    reason = "multiple_remotes_configured"


class InvalidTake(KimenError):
    """--take must be local or remote"""

    reason = "invalid_take"


class InvalidResetBaselineMode(KimenError):
    """pass exactly one of --to-remote, --clear or --rev"""

    reason = "invalid_reset_baseline_mode"


class ResetBaselineConfirmationRequired(KimenError):
    """pass --yes to reset the baseline"""

    reason = "reset_baseline_confirmation_required"


class RemoteBundleMissingForBaseline(KimenError):
    """remote has no bundle to take a baseline from"""

    reason = "remote_bundle_missing_for_baseline"


class MissingBackup(KimenError):
    """missing --backup"""

    reason = "missing_backup"


class UnknownPreflightCheck(KimenError):
    """unknown preflight check: {name}"""

    reason = "unknown_preflight_check"


class NoPreflightChecksSelected(KimenError):
    """no preflight checks selected"""

    reason = "no_preflight_checks_selected"


class GitFailed(KimenError):
    """git failed: {detail}"""

    reason = "git_failed"


class SyncFailed(KimenError):
    """sync failed: {detail}"""

    reason = "sync_failed"


# -- init --


class InvalidRemoteType(KimenError):
    """invalid remote type: {type}"""

    reason = "invalid_remote_type"


class OutputIsDirectory(KimenError):
    """output is a directory: {path}"""

    reason = "output_is_directory"


class OutputExists(KimenError):
    """output already exists: {path}"""

    reason = "output_exists"
    hint = "use --force to overwrite"


class InitFailed(KimenError):
    """init failed: {detail}"""

    reason = "init_failed"
