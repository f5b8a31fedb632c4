"""The one error hierarchy of kimen.

Every failure a user can see is a subclass of `KimenError` that declares:

- ``reason``: a stable snake_case machine name, never renamed;
- ``code``: the fixed exit code (docs/errors.md), or ``None`` for a command-area reason whose exit
  code is that of the command that raised it;
- its docstring: the default message template (``str.format`` over the error's fields);
- optionally ``hint``: a fix, printed as ``kimen: hint: …``.

Messages start lowercase, have no final period, name the thing (secret name, path, line) and never
carry a value, passphrase, token or identity. Raise the precise class where the failure is known;
never recover a reason by matching message text. The daemon sends ``{reason, message, …}`` and the
client re-raises ``error_class(reason)``, so the CLI has one handler for local and remote failures.

Warnings are not errors: they never change the exit code. Each has a stable reason too, declared
in `WARNINGS` below (docs/errors.md lists them) and passed to `kimen.output.warn`.

This module imports nothing but the standard library's typing (and, on the error path only, the
did-you-mean rule of `kimen.suggest`): it sits at the bottom of the layers.
"""

from __future__ import annotations

TYPE_CHECKING = False  # avoid importing typing on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, ClassVar

# Exit codes of command areas: a reason without a fixed code takes the code of the
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
AREA_INJECT = 28
AREA_MIGRATE = 29
AREA_REMOTE = 30
AREA_SYNC = 32
AREA_INIT = 33
AREA_SESSION = 34

_REGISTRY: dict[str, type[KimenError]] = {}

# Fields that go into the JSON error envelope (docs/errors.md lists them). Other fields only fill the
# message template.
CONTEXT_FIELDS = frozenset({
    "secret", "path", "line", "missing", "existing", "denied", "name", "variable", "signer",
    "generation", "expected_rev", "actual_rev", "recommended_action", "conflict_keys", "command",
    "status", "grant_id", "remote", "vault", "lock_path", "lock_age", "lock_owner", "issues",
    "searched", "suggestions", "known_seq", "remote_seq", "conflicts", "vault_path", "expired_at", "expired_by", "field",
    "column", "editor_status", "tool", "root", "depth", "available",
})


class KimenError(Exception):
    """kimen failed"""

    reason: ClassVar[str] = ""
    code: ClassVar[int | None] = None
    hint: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reason:
            known = _REGISTRY.setdefault(cls.reason, cls)
            if known is not cls:
                raise TypeError(f"duplicate reason {cls.reason!r}")

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
        """The JSON error envelope (fields are only ever added)."""
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
    """The class for `reason`; unknown reasons (a newer peer) map to a protocol error."""
    name = _NAME_OF_REASON.get(reason, "SessionProtocolError")
    return globals()[name] if name in globals() else __getattr__(name)


def all_error_classes(*, not_built: bool = False) -> list[type[KimenError]]:
    """Every error class some command raises, in declaration order (docs/errors.md lists these);
    with `not_built`, the classes declared for features not built yet instead."""
    rows = _NOT_BUILT if not_built else _DECLARED
    return [globals()[row[0]] if row[0] in globals() else __getattr__(row[0]) for row in rows]


def _names(names: Any) -> str:
    return ", ".join(names) if isinstance(names, (list, tuple)) else str(names)


class SecretNotFound(KimenError):
    """secret not found: {names}"""

    reason = "secret_not_found"
    code = 12

    def __init__(self, missing: list[str], *, known: Iterable[str] | None = None, **kw: Any) -> None:
        missing = sorted(missing)
        super().__init__(names=_names(missing), **kw)
        self.fields = {"missing": missing, **{k: v for k, v in kw.items() if k != "hint"}}
        self.suggested = False
        if known is not None:
            self.suggest(known)

    def suggest(self, known: Iterable[str]) -> None:
        """Up to 3 of the `known` names nearest to the missing ones, as field `suggestions` and a
        `did you mean …?` hint (names are plaintext metadata, not secret)."""
        from .suggest import hint, nearest

        known = set(known)
        missing = self.fields["missing"]
        found: list[str] = []
        lines: list[str] = []
        for name in missing:
            found += [n for n in nearest(name, known, most=3) if n not in found]
            line = hint(name, known, most=3)
            if line:
                lines.append(line if len(missing) == 1 else f"{name}: {line}")
        self.fields["suggestions"] = found[:3]
        self.suggested = True
        if lines and self.hint_text is None:
            self.hint_text = "\n".join(lines)


class SecretExists(KimenError):
    """secret already exists: {names}"""

    reason = "secret_exists"
    code = 13

    def __init__(self, existing: list[str], **kw: Any) -> None:
        existing = sorted(existing)
        super().__init__(names=_names(existing), **kw)
        self.fields = {"existing": existing, **{k: v for k, v in kw.items() if k != "hint"}}


# Every other reason is declared in this table: (class name, reason, fixed code or None, message
# template, hint). Classes are created on first use (PEP 562 module __getattr__): defining ~190
# exception classes at import costs ~20 M instructions (~5 ms), a quarter of `kimen run`'s budget,
# while a command raises at most one of them.
_DECLARED: tuple[tuple[str, str | None, int | None, str | None, str | None], ...] = (

    # ----------------------------------------------------------------------------------------
    # Fixed codes
    # ----------------------------------------------------------------------------------------
    ('InternalError', 'internal_error', 1, 'internal error ({type})',
     'this is a bug in kimen; rerun with --debug for a traceback and report it'),
    ('UsageError', 'usage_error', 2, '{detail}', None),
    ('Interrupted', 'interrupted', 130, 'interrupted', None),
    # -- passphrase (10) --
    ('MissingPassphrase', 'missing_passphrase', 10, 'no passphrase available',
     'set KIMEN_PASSPHRASE, pass --passphrase-cmd or --passphrase-stdin, start a session (kimen session '
     'start), configure an unlock method (kimen config unlock set), or run in a terminal'),
    ('EmptyPassphrase', 'empty_passphrase', 10, 'the passphrase is empty', None),
    ('PassphraseMismatch', 'passphrase_mismatch', 10, 'the passphrases do not match', None),
    ('PassphraseCommandFailed', 'passphrase_command_failed', 10, 'the passphrase command failed ({status})', None),
    ('EmptyPassphraseCommand', 'empty_passphrase_command', 10, 'the passphrase command is empty', None),
    ('MissingNewPassphrase', 'missing_new_passphrase', 10, 'no new passphrase available',
     'set KIMEN_NEW_PASSPHRASE, pass --new-passphrase-cmd or --new-passphrase-stdin, or run in a terminal'),
    ('EmptyNewPassphrase', 'empty_new_passphrase', 10, 'the new passphrase is empty', None),
    ('NewPassphraseMismatch', 'new_passphrase_mismatch', 10, 'the new passphrases do not match', None),
    ('NewPassphraseUnchanged', 'new_passphrase_unchanged', 10, 'the new passphrase equals the old one',
     'choose a different passphrase, change the --kdf-* parameters, or pass --rotate-data-key'),
    ('ConflictingPassphraseSources', 'conflicting_passphrase_sources', 10, 'several new-passphrase sources are set',
     None),
    ('SessionExpired', 'session_expired', 10,
     'the session for {vault_path} expired at {expired_at}; run `kimen session start`',
     'without a session, give a passphrase: KIMEN_PASSPHRASE, --passphrase-cmd, --passphrase-stdin, a configured '
     'unlock method or a terminal'),
    # -- secrets and vault data (12-15) --
    ('SecretNotFound', None, None, None, None),  # a class of its own, above
    ('SecretExists', None, None, None, None),  # a class of its own, above
    ('VaultNotFound', 'vault_not_found', 14, 'vault not found: {path}',
     'create one with `kimen vault init`, or select another with --vault or KIMEN_VAULT'),
    ('WrongPassphrase', 'wrong_passphrase', 15, 'wrong passphrase or damaged key record', None),
    ('SecretCorrupt', 'secret_corrupt', 15, 'secret {secret} failed authentication (tampered or damaged)', None),
    ('VaultTampered', 'vault_tampered', 15, 'vault integrity check failed: rows were added, removed or rolled back',
     None),
    # -- vault file (24) --
    ('InvalidVaultFile', 'invalid_vault_file', 24, 'not a kimen vault: {path}', None),
    ('VaultUnsupported', 'vault_unsupported', 24, 'vault format is newer than this kimen understands: {path}',
     'upgrade kimen'),
    ('KdfParamsRejected', 'kdf_params_rejected', 24, 'stored KDF parameters are outside the accepted range: {path}',
     None),
    ('VaultBusy', 'vault_busy', 24, 'vault is busy (another kimen is writing): {path}', 'retry in a moment'),
    ('VaultReadOnly', 'vault_read_only', 24, 'vault is read-only: {path}', None),
    ('DiskFull', 'disk_full', 24, 'no space left on the device holding {path}', None),
    # -- config (26) --
    ('InvalidConfigJson', 'invalid_config_json', 26, 'config file is not valid JSON: {path}', None),
    ('ConfigPathUnavailable', 'config_path_unavailable', 26, 'cannot determine the config location', None),
    # -- session daemon (34) --
    ('SessionUnavailable', 'session_unavailable', 34, 'no session daemon is running',
     'start one with `kimen session start`'),
    ('SessionLocked', 'session_locked', 34, 'session is locked for {vault}', 'unlock it with `kimen session start`'),
    ('SessionDirUnsafe', 'session_dir_unsafe', 34, 'session directory is unsafe: {path} ({problem})', None),
    ('SocketPathTooLong', 'socket_path_too_long', 34, 'session socket path is too long: {path}',
     'set KIMEN_SESSION_DIR to a shorter directory'),
    ('DaemonStartFailed', 'daemon_start_failed', 34, 'session daemon failed to start', None),
    ('SessionProtocolError', 'session_protocol_error', 34, 'session protocol error', None),
    ('SessionVersionMismatch', 'session_version_mismatch', 34, 'session daemon runs another kimen version',
     'restart it with `kimen session start`'),
    ('FrameTooLarge', 'frame_too_large', 34, 'session frame too large', None),
    ('InvalidTtl', 'invalid_ttl', 34, 'invalid TTL: {detail}',
     'use a duration such as 90s, 15m, 1h30m or 7d (ttl <= max-ttl <= 7d)'),
    ('SessionUnsupported', 'session_unsupported', 34, 'sessions are not supported on this platform', None),
    # -- run start failures (126/127) --
    ('CommandNotExecutable', 'command_not_executable', 126, 'command not executable: {command}', None),
    ('CommandNotFound', 'command_not_found', 127, 'command not found: {command}', None),
    # -- secret --
    ('InvalidSecretName', 'invalid_secret_name', None, 'invalid secret name: {name}',
     "names are dot-separated segments of [A-Za-z0-9_-], 1-128 bytes, not starting with '-'"),
    ('EmptySecretName', 'empty_secret_name', None, 'secret name is empty', None),
    ('SameSecretName', 'same_secret_name', None, 'old and new names are the same: {name}', None),
    ('UnsafeStdoutRequired', 'unsafe_stdout_required', None, 'refusing to print secret values without --unsafe-stdout',
     None),
    ('EmptySecretValue', 'empty_secret_value', None, 'secret value is empty', None),
    ('MissingSecretValue', 'missing_secret_value', None, 'no value given for {name}',
     'pass --stdin, --from-file PATH, --from-env VAR or --value TEXT, or run in a terminal'),
    ('ConflictingValueSources', 'conflicting_value_sources', None, 'give exactly one value source', None),
    ('ConflictingStdinInputs', 'conflicting_stdin_inputs', None, 'stdin cannot carry both the passphrase and another input',
     None),
    ('ValueSourceFailed', 'value_source_failed', None, 'cannot read the value: {detail}', None),
    ('SecretTooLarge', 'secret_too_large', None, 'value of {secret} exceeds 1 MiB', None),
    ('InvalidFingerprint', 'invalid_fingerprint', None, 'fingerprint must be 64 hex digits', None),
    ('FingerprintMismatch', 'fingerprint_mismatch', None, 'value does not match the expected fingerprint', None),
    ('SecretConfirmationMismatch', 'secret_confirmation_mismatch', None, 'the values do not match', None),
    ('InvalidDotenv', 'invalid_dotenv', None, 'invalid dotenv line {line}: {detail}', None),
    ('RevisionNotFound', 'revision_not_found', None, 'revision {revision} of {secret} is not kept',
     'kimen secret history NAME lists the revisions that are kept'),
    ('PurgeConfirmationRequired', 'purge_confirmation_required', None,
     'purging the history of every secret needs --yes', None),
    # -- daily use (secret generate|edit|copy, mv/rm --prefix, vault backups) --
    ('PruneConfirmationRequired', 'prune_confirmation_required', None,
     'pruning backups needs --yes', 'kimen vault backups lists them first'),
    ('RmConfirmationRequired', 'rm_confirmation_required', None,
     'removing every secret under {prefix} needs --yes', 'kimen secret list --prefix P shows what would go'),
    ('SecretChangedConcurrently', 'secret_changed_concurrently', None,
     '{secret} changed while it was being edited; nothing was written', 'run the command again'),
    ('ConflictingGenerateOptions', 'conflicting_generate_options', None, 'conflicting generate options: {detail}',
     'text mode takes --length and --charset; bytes mode takes --bytes and --encoding'),
    ('InvalidGenerateOptions', 'invalid_generate_options', None, 'invalid generate options: {detail}', None),
    ('ClipboardUnavailable', 'clipboard_unavailable', None, 'no clipboard tool found', None),
    ('ClipboardFailed', 'clipboard_failed', None, 'the clipboard tool {tool} failed ({detail})', None),
    ('InvalidDuration', 'invalid_duration', None, 'invalid duration: {detail}',
     'use a duration such as 45s, 2m or 1h30m'),
    ('EditorNotFound', 'editor_not_found', None, 'editor not found: {command}',
     'set VISUAL or EDITOR to an editor on PATH (for example EDITOR=nano)'),
    ('EditorFailed', 'editor_failed', None, 'the editor failed ({detail}); nothing was written', None),
    ('ValueNotEditable', 'value_not_editable', None, 'the value of {secret} is not editable text (not UTF-8, or NUL bytes)',
     'replace it with `kimen secret set NAME --from-file PATH`'),
    # -- vault --
    ('VaultExists', 'vault_exists', None, 'vault already exists: {path}', None),
    ('ConflictingBackupOptions', 'conflicting_backup_options', None, '--no-backup and --backup-dir cannot be combined',
     None),
    ('BackupFailed', 'backup_failed', None, 'backup failed: {detail}', None),
    ('InvalidKdfParams', 'invalid_kdf_params', None, 'invalid KDF parameters: {detail}', None),
    ('VaultFailed', 'vault_failed', None, 'vault operation failed: {detail}', None),
    # -- config --
    ('UnknownUnlockMethod', 'unknown_unlock_method', None, 'unknown unlock method: {method}',
     'use prompt, env, stdin or exec'),
    ('MissingUnlockExecCommand', 'missing_unlock_exec_command', None, 'unlock method exec needs a command after --',
     'kimen config unlock set exec -- CMD ARGS...'),
    ('MissingVaultPath', 'missing_vault_path', None, 'missing vault path', None),
    ('ConfigFailed', 'config_failed', None, 'config command failed: {detail}', None),
    # -- projection --
    ('MissingCommand', 'missing_command', None, 'missing command; use `kimen {command} -- <command>`', None),
    ('ConflictingMapProfileInputs', 'conflicting_map_profile_inputs', None, 'use either --map or --profile, not both',
     None),
    ('ConflictingSourceInputs', 'conflicting_source_inputs', None, 'use either --bundle or --vault, not both', None),
    ('InvalidProfileName', 'invalid_profile_name', None, 'invalid profile name: {name}', None),
    ('ProfileNotFound', 'profile_not_found', None, 'profile not found: {name}', None),
    ('MapUnreadable', 'map_unreadable', None, 'cannot read map: {path}', None),
    ('InvalidMap', 'invalid_map', None, '{path}:{line}: {detail}', None),
    ('IncludeCycle', 'include_cycle', None, 'include cycle: {chain}', None),
    ('IncludeNotFound', 'include_not_found', None, '{path}:{line}: include not found: {name}', None),
    ('DuplicateStdin', 'duplicate_stdin', None, 'more than one stdin directive', None),
    ('InvalidMapping', 'invalid_mapping', None, 'invalid mapping: {detail}', None),
    ('InvalidEnvVar', 'invalid_env_var', None, 'invalid environment variable name: {name}', None),
    ('ReservedEnvVar', 'reserved_env_var', None, 'environment variable name is reserved for kimen: {name}', None),
    ('InvalidRelativePath', 'invalid_relative_path', None, 'invalid relative path: {detail}', None),
    ('EnvpathRequiresProjectedFiles', 'envpath_requires_projected_files', None, 'envpath {name} needs a file directive, and the profile projects no files',
     None),
    ('EnvpathMissingProjectedFile', 'envpath_missing_projected_file', None, 'envpath {name} names a file that no file directive projects: {relpath}',
     None),
    ('ExecSourceFailed', 'exec_source_failed', None, 'exec source failed: {detail}', None),
    ('InvalidEnvValue', 'invalid_env_value', None, 'value of {name} contains a NUL byte', None),
    ('ValueTooLargeForEnv', 'value_too_large_for_env', None, 'value of {name} is too large for an environment variable',
     'project it as a file with `file` and `envpath`'),
    ('EnvironmentTooLarge', 'environment_too_large', None, 'environment and arguments exceed the system limit', None),
    ('UnsafeFilesDir', 'unsafe_files_dir', None, 'unsafe files directory: {path} ({problem})', None),
    ('UnsafeOutputDir', 'unsafe_output_dir', None, 'unsafe output directory: {path} ({problem})', None),
    ('UnsafeOutputPath', 'unsafe_output_path', None, 'unsafe output path: {path} ({problem})', None),
    ('WriteFailed', 'write_failed', None, 'write failed: {detail}', None),
    ('ConflictingRenderTargetInputs', 'conflicting_render_target_inputs', None, 'use either --dir or --systemd-service, not both',
     None),
    ('MissingRenderTarget', 'missing_render_target', None, 'missing render target; use --dir DIR or --systemd-service NAME',
     None),
    ('SystemdHintsRequiresService', 'systemd_hints_requires_service', None, '--print-systemd-hints requires --systemd-service',
     None),
    ('InvalidSystemdService', 'invalid_systemd_service', None, 'invalid systemd service name: {name}', None),
    ('MissingEnvMappings', 'missing_env_mappings', None, 'no environment variables to write', None),
    ('MissingFilesDirForEnvpath', 'missing_files_dir_for_envpath', None, '--envpath needs --files-dir', None),
    ('ValueNotRepresentable', 'value_not_representable', None, 'value of {name} cannot be represented in {format} format',
     None),
    ('MaskValueTooShort', 'mask_value_too_short', None, 'values too short to mask (under 6 bytes): {names}',
     'run without --strict-mask to show them unmasked, or project longer values'),
    ('InvalidMode', 'invalid_mode', None, 'invalid mode: {mode}', 'use run, render or envfile'),
    ('ConflictingAgainstInputs', 'conflicting_against_inputs', None, 'use either --against-profile or --against-map, not both',
     None),
    ('InvalidAgainstSpec', 'invalid_against_spec', None, 'invalid comparison profile: {detail}', None),
    ('ProjectionFailed', 'projection_failed', None, 'projection failed: {detail}', None),
    # -- bundle --
    ('MissingOut', 'missing_out', None, 'missing --out', None),
    ('MissingIn', 'missing_in', None, 'missing --in', None),
    ('MissingRecipient', 'missing_recipient', None, 'no recipients given',
     'pass --recipient age1... or --recipients-file FILE'),
    ('MissingIdentityInput', 'missing_identity_input', None, 'no identity given; use --identity FILE or --identity-stdin',
     None),
    ('InputMissing', 'input_missing', None, 'input file not found: {path}', None),
    ('IdentityExists', 'identity_exists', None, 'identity file already exists: {path}',
     'use --overwrite to replace it'),
    ('OutputVaultExists', 'output_vault_exists', None, 'output vault already exists: {path}',
     "use --overwrite to set the bundle's names in it, or --mirror to also remove the names the bundle lacks"),
    ('InvalidRecipient', 'invalid_recipient', None, 'invalid recipient: {detail}', None),
    ('InvalidIdentity', 'invalid_identity', None, 'invalid identity: {detail}', None),
    ('MissingIdentityFile', 'missing_identity_file', None, 'identity file not found: {path}', None),
    ('NoIdentityFound', 'no_identity_found', None, 'no identity found in {source}', None),
    ('MultipleIdentitiesFound', 'multiple_identities_found', None, 'more than one identity found in {source}', None),
    ('RecipientsFileContainsIdentity', 'recipients_file_contains_identity', None, '{path}:{line}: recipients file contains a secret identity',
     'list public recipients (age1...) only; remove the identity and rotate it'),
    ('BundleInvalid', 'bundle_invalid', None, 'invalid bundle: {detail}', None),
    ('BundleNotADocument', 'bundle_not_a_document', None, 'decrypted payload is not a kimen bundle document', None),
    ('BundleUnsupported', 'bundle_unsupported', None, 'unsupported bundle: {detail}', None),
    ('BundleNoMatch', 'bundle_no_match', None, "no identity matches the bundle's recipients", None),
    ('BundleDecryptFailed', 'bundle_decrypt_failed', None, 'bundle decryption failed (damaged or tampered)', None),
    ('BundleTooLarge', 'bundle_too_large', None, 'bundle exceeds the size limit', None),
    ('AgeWorkFactorRejected', 'age_work_factor_rejected', None, 'age scrypt work factor {work_factor} exceeds the limit of 20',
     None),
    ('MissingSigningIdentity', 'missing_signing_identity', None, 'no identity to sign the bundle with',
     'pass --identity FILE (or --no-sign to seal an unsigned bundle)'),
    ('BundleUnsigned', 'bundle_unsigned', None, 'bundle is not signed', 'pass --allow-unsigned to accept it anyway'),
    ('BundleSignatureInvalid', 'bundle_signature_invalid', None, 'bundle signature is invalid', None),
    ('BundleSignerUntrusted', 'bundle_signer_untrusted', None, 'bundle signer is not trusted: {signer}',
     'trust it with --trusted-signer <id> or KIMEN_TRUSTED_SIGNERS=<id>'),
    ('InvalidSigner', 'invalid_signer', None, 'invalid signer id: {detail}', None),
    ('BundleReplay', 'bundle_replay', None, 'bundle generation {generation} is older than one already accepted ({high})',
     'pass --allow-older to accept an older bundle deliberately'),
    ('GenerationInFuture', 'generation_in_future', None,
     'bundle generation {generation} is more than 15 minutes ahead of the local clock',
     "check the clocks of the sealer and of this machine; accepting it would refuse every bundle sealed until then"),
    ('BundleExpired', 'bundle_expired', None, 'bundle is older than --max-age', None),
    ('BundleFailed', 'bundle_failed', None, 'bundle command failed: {detail}', None),
    # -- init --
    ('TemplateValueUnsafe', 'template_value_unsafe', None, '{flag} cannot be written into a workflow: {detail}',
     'use shell variables such as $GITHUB_SHA instead of ${{ }} expressions, and keep the value on one line'),
    ('OutputIsDirectory', 'output_is_directory', None, 'output is a directory: {path}', None),
    ('OutputExists', 'output_exists', None, 'output already exists: {path}', 'use --force to overwrite'),
    ('InitFailed', 'init_failed', None, 'init failed: {detail}', None),
    ('InvalidRemoteType', 'invalid_remote_type', None, 'invalid remote type for a CI gate: {type}',
     'a CI job reaches the team through a git repository: pass --remote-type git'),
    # -- audit (34) --
    ('AuditUnavailable', 'audit_unavailable', 34, 'audit log cannot be written: {path} ({problem})',
     'the daemon refuses requests until it can write its audit log: free space, or remove what replaced the file'),
    # -- grants (35) --
    ('GrantRequired', 'grant_required', 35, 'this session requires a grant token',
     'present a token from `kimen session grant` in KIMEN_SESSION_TOKEN or with --token-file'),
    ('GrantDenied', 'grant_denied', 35, 'grant does not cover: {names}', None),
    ('GrantExpired', 'grant_expired', 35, 'grant {grant_id} expired', 'ask for a new grant (`kimen session grant`)'),
    ('GrantInvalid', 'grant_invalid', 35, 'grant token is invalid (malformed, unknown or revoked)',
     'ask for a new grant (`kimen session grant`); a grant ends with the session daemon that minted it'),
    # -- grants and audit (session area) --
    ('GrantScopeEmpty', 'grant_scope_empty', None, 'grant scope is empty', None),
    ('GrantNotFound', 'grant_not_found', None, 'grant not found: {grant_id}', None),
    ('AuditLogUnreadable', 'audit_log_unreadable', None, 'audit log is unreadable: {path} ({problem})', None),
    ('InvalidSince', 'invalid_since', None, 'invalid --since: {text}',
     'give a duration back from now (90s, 15m, 1h30m, 7d) or an RFC 3339 time (2026-11-25T10:00:00Z)'),
    ('UnsafeTokenFile', 'unsafe_token_file', None, 'unsafe token file: {path} ({problem})',
     'the token file must be a regular file you own, readable by you only (chmod 600)'),
    # -- daily use: inject, migrate, status, direnv --
    ('InvalidTemplate', 'invalid_template', None, 'invalid template reference at line {line}, column {column}',
     'a reference is {{ kimen:NAME }} on one line; write \\{{ kimen:NAME }} to keep one literally'),
    ('TemplateTooLarge', 'template_too_large', None, 'template {path} exceeds 16 MiB', None),
    ('TemplateUnreadable', 'template_unreadable', None, 'cannot read the template: {path} ({problem})', None),
    ('NoEnvFilesFound', 'no_env_files_found', None, 'no dotenv files found under {root} (depth {depth})',
     'name the files (kimen migrate FILE ...) or look deeper (--depth N, at most 8)'),
    ('MigratePrefixAmbiguous', 'migrate_prefix_ambiguous', None,
     '--prefix {prefix} would give the same names to files of more than one directory or profile',
     'drop --prefix, or migrate one directory at a time: kimen migrate DIR/.env --prefix P'),
    ('ProfileExists', 'profile_exists', None, 'profile already exists: {path}',
     'pass --update-profile to add the variables it does not set'),
    ('UnsafeStdoutTerminal', 'unsafe_stdout_terminal', None, 'refusing to print secret values to a terminal',
     'run it inside eval "$(...)" (direnv), or drop --unsafe-stdout'),
    ('DirenvNeedsSession', 'direnv_needs_session', None,
     'direnv --unsafe-stdout reads values only from a live session or an explicit passphrase source',
     'kimen session start'),
    # -- remotes and team sync (30, 31, 32) --
    ('RemoteScopeOverlap', 'remote_scope_overlap', None,
     'your scope in remote {remote} ({glob}) overlaps your scope in remote {other} ({other_glob})',
     'one vault may sync several remotes only with disjoint scopes: ask an admin to narrow one scope'),
    ('SyncHistoryUnavailable', 'sync_history_unavailable', None, 'head {seq} is not available',
     'the remote keeps a limited history (fs: the last 64 heads), and a head sealed before you joined does not '
     'decrypt with your identity'),
    ('MissingToSeq', 'missing_to_seq', None, 'missing --to-seq', 'kimen sync revert NAME --to-seq N (see `kimen sync log`)'),
    ('LockMissing', 'lock_missing', None, 'no remote lock present', None),
    ('UnlockConfirmationRequired', 'unlock_confirmation_required', None, 'pass --yes to remove the remote lock',
     None),
    ('UnlockRequiresFsRemote', 'unlock_requires_fs_remote', None, 'sync unlock works on fs remotes only', None),
    ('InvalidIfOlderThan', 'invalid_if_older_than', None, 'invalid --if-older-than: {detail}', None),
    ('InvalidResetBaselineMode', 'invalid_reset_baseline_mode', None, 'pass exactly one of --to-remote, --clear or --rev',
     None),
    ('ResetBaselineConfirmationRequired', 'reset_baseline_confirmation_required', None, 'pass --yes to reset the baseline',
     None),
    ('RemoteBundleMissingForBaseline', 'remote_bundle_missing_for_baseline', None, 'remote has no bundle to take a baseline from',
     None),
    ('RemoteChanged', 'remote_changed', 31, 'remote changed since the last sync', None),
    ('NoLocalBaseline', 'no_local_baseline', 31, 'remote has a bundle but this vault has no baseline for it', None),
    ('RemoteDisappeared', 'remote_disappeared', 31, 'remote bundle disappeared', None),
    ('OverlappingChanges', 'overlapping_changes', 31, 'local and remote changed the same keys: {names}', None),
    ('RemoteRollback', 'remote_rollback', 31, 'remote bundle is older than one already accepted', None),
    ('RemoteFork', 'remote_fork', 31, 'remote head (seq {remote_seq}) does not descend from the head already accepted (seq {known_seq}): {detail}',
     'an admin can republish the accepted head with `kimen sync push --restore-head --yes`; see docs/sync.md'),
    ('RemoteHistoryGap', 'remote_history_gap', 31, "remote head (seq {remote_seq}) is too far ahead of the head already accepted (seq {known_seq}): its log no longer reaches it",
     'make this vault mirror the head with `kimen sync pull --mirror` (a backup is written first)'),
    ('EmptyRemoteName', 'empty_remote_name', None, 'remote name is empty', None),
    ('InvalidRemoteName', 'invalid_remote_name', None, 'invalid remote name: {name}', None),
    ('RemoteNotFound', 'remote_not_found', None, 'remote not found: {name}', None),
    ('RemoteExists', 'remote_exists', None, 'remote already exists: {name}', None),
    ('UnsupportedRemoteType', 'unsupported_remote_type', None, 'unsupported remote type: {type}', None),
    ('MissingRemoteSetFields', 'missing_remote_set_fields', None, 'nothing to change; pass at least one field', None),
    ('GitFieldsRequireGitType', 'git_fields_require_git_type', None, '--branch and --bundle-path require --type git',
     None),
    ('MissingPath', 'missing_path', None, 'missing --path', None),
    ('RemoteMissing', 'remote_missing', None, 'remote has no bundle', None),
    ('LocalVaultMissing', 'local_vault_missing', None, 'local vault is missing', None),
    ('NoOverlappingConflicts', 'no_overlapping_conflicts', None, 'there are no overlapping conflicts to resolve',
     None),
    ('ResolveKeyNotConflict', 'resolve_key_not_conflict', None, 'not a conflict: {names}', None),
    ('RemoteLockPresent', 'remote_lock_present', None, 'remote is locked by another push: {lock_owner}',
     'wait for it to finish, or see who holds it with `kimen sync unlock`'),
    ('RemoteIdentityMissing', 'remote_identity_missing', None, 'remote has no identity', None),
    ('ManualPullRequired', 'manual_pull_required', None, 'local changes since the last sync; a fast-forward pull is not possible',
     'use --reconcile'),
    ('LockFlagsRequireFsRemote', 'lock_flags_require_fs_remote', None, 'lock flags work on fs remotes only', None),
    ('ConflictingDryRunLockFlags', 'conflicting_dry_run_lock_flags', None, '--dry-run cannot be combined with lock flags',
     None),
    ('InvalidLockWait', 'invalid_lock_wait', None, 'invalid --lock-wait: {detail}', None),
    ('InvalidBreakStaleLockAfter', 'invalid_break_stale_lock_after', None, 'invalid --break-stale-lock-after: {detail}',
     None),
    ('RemoteNotFoundFromEnv', 'remote_not_found_from_env', None, 'KIMEN_REMOTE names an unknown remote: {name}',
     None),
    ('NoRemotesConfigured', 'no_remotes_configured', None, 'no remotes configured', None),
    ('MultipleRemotesConfigured', 'multiple_remotes_configured', None, 'several remotes configured; pass --remote',
     None),
    ('InvalidTake', 'invalid_take', None, '--take must be local or remote', None),
    ('MembershipNotInConfig', 'membership_not_in_config', None, '{flag}: membership is not configured per remote',
     'membership lives in the remote\'s head: `kimen sync members add`'),
    ('InvalidMaxSkew', 'invalid_max_skew', None, 'invalid --max-skew: {detail}', None),
    ('SyncRotationDue', 'rotation_due', None, '{count} names are due for rotation after a member was removed',
     'set each listed name to a new value (or delete it) and push; `kimen sync rotation` lists them'),
    ('InvalidLimit', 'invalid_limit', None, 'invalid --limit: {detail}', 'a whole number from 1'),
    ('MembersRmConfirmationRequired', 'members_rm_confirmation_required', None,
     'removing member {member} needs --yes', 'they keep what they already fetched: rotate those secrets afterwards'),
    ('MembersPinMismatch', 'members_pin_mismatch', None, 'the membership fingerprint is {actual}, not {expected}',
     'compare the members (`kimen sync members list`) before acknowledging them'),
    ('ConflictingPullModes', 'conflicting_pull_modes', None, '--reconcile and --mirror cannot be combined', None),
    ('SyncBaselineTampered', 'sync_baseline_tampered', None, 'the sync baseline of remote {remote} fails its integrity check',
     'take the head as the new baseline: `kimen sync reset-baseline --to-remote --yes`'),
    ('GitFailed', 'git_failed', None, 'git failed: {detail}', None),
    ('GitLfsPointer', 'git_lfs_pointer', None, 'remote head {path} is a Git LFS pointer, not a head',
     'keep the bundle path out of Git LFS (remove its pattern from .gitattributes) and publish the head again'),
    ('SyncPushUnconfirmed', 'sync_push_unconfirmed', None, 'the new head could not be confirmed: {detail}',
     'the vault is unchanged; run the command again: it adopts or merges whatever the remote holds'),
    ('FsLockUnsupported', 'fs_lock_unsupported', None, 'fs remote {path}: {detail}',
     'use a local filesystem or NFSv4 (docs/sync.md, "Supported filesystems")'),
    ('InvalidBundlePath', 'invalid_bundle_path', None, 'invalid bundle path: {detail}',
     "a relative path inside the repository, without '..' or '.git' segments"),
    ('InvalidRemoteId', 'invalid_remote_id', None, 'invalid remote id: {remote_id}', 'a remote id is 32 hex digits'),
    ('BundleWrongRemote', 'bundle_wrong_remote', None, 'head belongs to remote {remote_id}, not to the configured {expected}',
     "check the remote's location, or its remote_id in the config"),
    ('SyncNotASyncDocument', 'sync_not_a_sync_document', None, 'not a sync head: the document has no sync member',
     'a bundle made by `kimen bundle seal` is not a team head'),
    ('SyncMembershipInvalid', 'sync_membership_invalid', None, 'invalid membership record {epoch}: {detail}', None),
    ('SyncSignerNotWriter', 'sync_signer_not_writer', None, 'head {seq} is not signed by a writer of its membership: {detail}',
     None),
    ('SyncWriteUnauthorized', 'sync_write_unauthorized', None, 'head {seq} makes an unauthorized change: {detail}', None),
    ('SyncNotAMember', 'sync_not_a_member', None, 'not a member of this remote',
     'ask an admin to add you: `kimen sync join` prints the request to send (or you may have been removed)'),
    ('SyncRoleForbidden', 'sync_role_forbidden', None, 'member {member} ({role}) may not {action}', None),
    ('SyncLastAdmin', 'sync_last_admin', None, 'cannot remove {member}: the team would have no admin',
     'make another member an admin first (`kimen sync members add ID --update --role admin`)'),
    ('MemberExists', 'member_exists', None, 'member already exists: {member}', 'pass --update to change its role or scope'),
    ('MemberNotFound', 'member_not_found', None, 'member not found: {member}', None),
    ('InvalidMemberId', 'invalid_member_id', None, 'invalid member id: {member}',
     "ids are 1-64 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or a digit"),
    ('InvalidJoinRequest', 'invalid_join_request', None, 'invalid join request: {detail}', None),
    ('InvalidScopeGlob', 'invalid_scope_glob', None, 'invalid scope glob: {glob}',
     "dot-separated segments, each a name segment, '*' (one segment) or '**' (one or more segments, last only)"),
    ('KeyOutOfScope', 'key_out_of_scope', None, '{name} is outside the scope of member {member}', None),
    ('SyncFailed', 'sync_failed', None, 'sync failed: {detail}', None),
    ('InvalidStaleThreshold', 'invalid_stale_threshold', None, 'invalid --stale-threshold: {detail}',
     'a duration such as 12h or 7d; 0 turns it off'),
    ('UnknownPreflightCheck', 'unknown_preflight_check', None, 'unknown preflight check: {name}',
     'the checks: doctor, head, pin, status, conflicts, rotation, pull, push'),
    ('NoPreflightChecksSelected', 'no_preflight_checks_selected', None, 'no preflight checks selected',
     '--only and --skip left no check to run'),
    ('MembersUnacknowledged', 'members_unacknowledged', None, 'the members changed since you acknowledged them',
     'compare them (`kimen sync members list`), then `kimen sync members ack`'),
    ('MissingBackup', 'missing_backup', None, 'missing --backup', 'kimen sync restore --backup FILE (see `kimen vault backups`)'),
    ('RestoreHeadConfirmationRequired', 'restore_head_confirmation_required', None,
     'publishing the known head again needs --yes', 'kimen sync push --restore-head --yes (admins)'),
    ('RestoreHeadUnavailable', 'restore_head_unavailable', None, 'cannot restore the head of remote {remote}: {detail}',
     'restore the head from a machine that accepted it (its state directory keeps a copy)'),
    ('RestoreHeadNotNeeded', 'restore_head_not_needed', None,
     'remote {remote} holds a head that descends from the known head: nothing to restore',
     'pull or push as usual (`kimen sync status`)'),
    ('ConflictingCheckAndDryRun', 'conflicting_check_and_dry_run', None, '--check and --dry-run cannot be combined',
     "--check only decides; --dry-run also runs the decided step's dry run"),
    ('DoctorFailed', 'doctor_failed', None, 'doctor found {errors} errors and {warnings} warnings',
     'run `kimen doctor` (with the same --profile) for the report'),
)


# ---------------------------------------------------------------------------------------------
# Declared for features not built yet (the sync commands still to come, agent grants and the
# audit log) and for catch-all reasons no command raises yet. No command
# raises these today: they stay out of docs/errors.md until a command does, and then move up into the table above
# (tests/test_errors.py checks both directions).
# ---------------------------------------------------------------------------------------------
_NOT_BUILT: tuple[tuple[str, str | None, int | None, str | None, str | None], ...] = (
    # -- catch-all reasons nothing raises yet --
    ('SecretFailed', 'secret_failed', None, 'secret command failed: {detail}', None),
    ('PlanFailed', 'plan_failed', None, 'plan failed: {detail}', None),
    ('EnvfileFailed', 'envfile_failed', None, 'envfile failed: {detail}', None),
    # -- remote --
    ('ConflictingDeriveFlags', 'conflicting_derive_flags', None, '--derive-recipient and --no-derive-recipient cannot be combined',
     None),
    ('ConflictingDeriveRecipientInputs', 'conflicting_derive_recipient_inputs', None, '--derive-recipient cannot be combined with explicit recipients',
     None),
    ('MissingIdentityForRecipientDerivation', 'missing_identity_for_recipient_derivation', None, '--derive-recipient needs --identity',
     None),
    ('RecipientDerivationFailed', 'recipient_derivation_failed', None, 'cannot derive a recipient from the identity',
     None),
    ('EmptyPath', 'empty_path', None, 'path is empty', None),
    ('RemoteFailed', 'remote_failed', None, 'remote command failed: {detail}', None),
    # -- sync --
    ('ReconcileBaselineMissing', 'reconcile_baseline_missing', None, 'reconcile needs a baseline; pull first', None),
    ('RemoteRecipientMissing', 'remote_recipient_missing', None, 'remote has no recipients', None),
    ('LockTooNew', 'lock_too_new', None, 'remote lock is newer than --if-older-than', None),
)

_SPECS = {row[0]: row for row in _DECLARED + _NOT_BUILT}
_NAME_OF_REASON = {row[1]: row[0] for row in _DECLARED + _NOT_BUILT if row[1] is not None}
_NAME_OF_REASON.update({SecretNotFound.reason: "SecretNotFound", SecretExists.reason: "SecretExists"})
if len(_NAME_OF_REASON) != len(_DECLARED) + len(_NOT_BUILT):  # pragma: no cover - caught by the tests at once
    raise TypeError("duplicate reason in the error table")


def __getattr__(name: str) -> type[KimenError]:
    spec = _SPECS.get(name)
    if spec is None or spec[1] is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _name, reason, code, template, hint = spec
    cls = type(name, (KimenError,), {
        "__doc__": template, "__module__": __name__, "__qualname__": name,
        "reason": reason, "code": code, "hint": hint,
    })
    globals()[name] = cls
    return cls


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SPECS))


# ---------------------------------------------------------------------------------------------
# Warning reasons: `kimen.output.warn(message, reason=…)` prints `kimen: warning: <message>`, or
# with --json adds `{"reason", "message"}` to the envelope's `warnings`. Never an exit code.
# reason -> when it is raised (docs/errors.md lists them; tests/test_errors.py checks that every
# `warn` call names a reason declared here and that every reason here is raised somewhere).
# ---------------------------------------------------------------------------------------------
WARNINGS: dict[str, str] = {
    "passphrase_source_conflict": "several explicit passphrase sources are set; the first is used and the others named",
    "passphrase_retry": "a wrong passphrase at the terminal prompt; it is asked again (3 attempts)",
    "short_passphrase": "`vault init`: the new passphrase is shorter than 8 characters",
    "vault_permissions_loose": "the vault file is readable or writable by other users",
    "vault_migrated": "the first change to a schema version 1 vault migrated it to version 2 after a backup "
                      "(the warning names the backup)",
    "value_on_command_line": "`secret set --value`: the value is visible in the process list and shell history",
    "import_key_repeated": "`secret import`, `migrate`: a key is set more than once in a file; the last value wins",
    "import_not_interpolated": "`secret import`, `migrate`: a value holding `${…}` or `\\$` is imported literally "
                               "(names the file, line and key, never the value)",
    "nested_run": "`run` started inside the child of another `kimen run`",
    "envpath_skipped": "`envfile` without --files-dir: the profile's envpath directives are skipped",
    "generated_value_weak": "`secret generate`: the value has fewer than 64 bits of strength (a PIN may be meant)",
    "env_file_tracked": "`migrate`: a dotenv file is tracked by git (its values are in the history: rotate them)",
    "migrate_kept_existing": "`migrate --skip-existing`: names already in the vault are kept and mapped, not imported",
    "template_has_no_references": "`inject`: the template holds no {{ kimen:NAME }} reference (it is copied as is)",
    "direnv_skipped_directives": "`direnv --unsafe-stdout`: the profile's file, envpath and stdin directives are skipped",
    "identity_source_conflict": "several age identities are given; the first is used and the others named",
    "bundle_unsigned_accepted": "--allow-unsigned accepted a bundle without a signature",
    "duplicate_recipient": "`bundle seal`: a recipient given twice is used once",
    "secret_glob_unmatched": "`bundle seal --secret GLOB`: the glob matches no secret",
    "bundle_seal_all": "`bundle seal` without --profile, --map or --secret: says it seals the whole vault, and how many",
    "bundle_generation_ignored": "`bundle seal`: the vault recorded a bundle generation beyond the largest valid one; "
                                 "a current generation is used",
    "output_not_git_ignored": "`bundle keygen --out`, `envfile --out` inside a git work tree: git would not ignore "
                              "the file (the message gives the .gitignore line)",
    "session_dir_ignored": "the session directory is unsafe, so the session is not used",
    "session_dir_unusable": "`session status`: the session directory cannot be used (reported as stopped)",
    "session_other_version": "the session daemon runs another kimen version; it is not used until restarted",
    "token_source_conflict": "both --token-file and KIMEN_SESSION_TOKEN are set; the token file is used",
    "grant_revoke_failed": "`session grant -- CMD`: the grant could not be revoked when CMD exited (it ends at its "
                           "expiry or with the daemon)",
    "source_tracked_by_git": "`secret set --from-file`, `secret import`: the source file is tracked by git (the value "
                             "is in its history: rotate it)",
    "mask_value_unmasked": "`run --mask`: projected values under 6 bytes are not masked (names them, never the values)",
    "remote_id_pinned": "first contact with a remote whose id was not configured: the id is written to the config",
    "remote_membership_keys_ignored": "a remote object in the config has `recipients`, `signers` or `scope`: ignored "
                                      "(membership lives in the remote's head)",
    "remote_filesystem_unsupported": "`sync init`: the fs remote's directory is on a network or FUSE filesystem other "
                                     "than nfs4, whose locks and renames kimen cannot rely on",
    "break_stale_lock_ignored": "`sync push --break-stale-lock-after`: accepted and ignored (a remote's lock is a "
                                "flock, released when its holder dies)",
}
