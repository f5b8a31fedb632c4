#!/usr/bin/env bash
# `make demo`: a narrated end-to-end run of kimen on a throwaway vault in a temporary directory.
# Nothing outside that directory is read or written; it is removed at the end.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="$(mktemp -d "${TMPDIR:-/tmp}/kimen-demo.XXXXXX")"
SESSION_DIR="$(mktemp -d /tmp/kds.XXXXXX)"  # short path: Unix socket paths are limited
rmdir "$SESSION_DIR"
cleanup() {
    kimen session stop >/dev/null 2>&1 || true
    rm -rf "$DEMO" "$SESSION_DIR"
}
trap cleanup EXIT

# An isolated world: its own HOME and XDG dirs, no KIMEN_* from the caller's shell.
unset KIMEN_PASSPHRASE KIMEN_NEW_PASSPHRASE KIMEN_VAULT KIMEN_CONFIG KIMEN_SESSION_TOKEN \
      KIMEN_AGE_IDENTITY KIMEN_TRUSTED_SIGNERS KIMEN_PROFILE_DIR KIMEN_REMOTE
export HOME="$DEMO/home" XDG_CONFIG_HOME="$DEMO/config" XDG_CACHE_HOME="$DEMO/cache" \
       XDG_STATE_HOME="$DEMO/state" KIMEN_SESSION_DIR="$SESSION_DIR"
mkdir -p "$HOME" "$DEMO/app"
cd "$DEMO/app"

bold=$'\033[1m'; dim=$'\033[2m'; off=$'\033[0m'
[ -t 1 ] || { bold=""; dim=""; off=""; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '%s%s%s\n' "$dim" "$*" "$off"; }
# Show the command as it could be typed (arguments with spaces or quotes shown single-quoted), then run it.
run() {
    local shown="" arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then shown+="$arg "; else shown+="'${arg//\'/\'\\\'\'}' "; fi
    done
    printf '%s$ %s%s\n' "$bold" "${shown% }" "$off"
    "$@"
}

# The demo's passphrase lives in a private file and reaches kimen through --passphrase-cmd:
# never on a command line, never in an environment variable.
umask 077
printf 'demo passphrase, do not reuse\n' > "$DEMO/passphrase"
PASS_CMD="cat $DEMO/passphrase"

step "1. Create a vault"
say "One SQLite file; values are encrypted with a key wrapped by argon2id(passphrase)."
say "(The demo uses small KDF parameters to stay fast; the defaults are m=64MiB t=3 p=4.)"
run kimen vault init --passphrase-cmd "$PASS_CMD" --kdf-memory 8MiB --kdf-time 1 --kdf-parallelism 1

step "2. Store secrets without putting them on a command line"
printf 'postgres://app:s3cr3t@db.internal/app' | run kimen secret set demo.database_url --stdin --passphrase-cmd "$PASS_CMD"
printf 'tok_live_0123456789abcdef\n' > "$DEMO/token.txt"
run kimen secret set demo.api_token --from-file "$DEMO/token.txt" --strip-newline --passphrase-cmd "$PASS_CMD"
rm -f "$DEMO/token.txt"

step "3. Names are metadata: listing needs no passphrase"
run kimen secret list --long

step "4. Values are never printed unless you ask for it explicitly"
run kimen secret get demo.api_token --passphrase-cmd "$PASS_CMD" || say "(refused, as it should be: exit $?)"

step "5. Import an existing .env file"
printf 'export LOG_LEVEL=debug\nFEATURE_FLAGS="a,b,c"\n' > "$DEMO/old.env"
run kimen secret import "$DEMO/old.env" --prefix demo. --passphrase-cmd "$PASS_CMD"
rm -f "$DEMO/old.env"

step "6. Verify the vault's integrity"
run kimen vault info --verify --passphrase-cmd "$PASS_CMD"

step "7. Machine-readable output for scripts"
run kimen secret list --json

step "8. Profiles: a .kmap file maps secrets to env vars and files"
export KIMEN_PROFILE_DIR="$REPO/profiles"
run cat "$REPO/profiles/demo.kmap"
run kimen map lint --profile demo

step "9. Plan first: what would run, with which references (never values; no vault opened)"
run kimen plan --profile demo -- ./app

step "10. Run one command with the secrets projected"
say "The child gets env vars and private files (0600 in a 0700 dir on tmpfs), removed when it exits."
cat > "$DEMO/app/app.sh" <<'APP'
#!/bin/sh
echo "app: DATABASE_URL has ${#DATABASE_URL} characters, APP_ENV=$APP_ENV, PORT=$PORT"
echo "app: API_TOKEN_FILE=$API_TOKEN_FILE"
ls -l "$KIMEN_FILES_DIR/credentials"
echo "$KIMEN_FILES_DIR" > files-dir.txt
exit 3
APP
chmod +x "$DEMO/app/app.sh"
run kimen run --profile demo --passphrase-cmd "$PASS_CMD" -- ./app.sh || say "(exit status $? is the app's own)"
if [ -e "$(cat files-dir.txt)" ]; then say "runtime dir still there?!"; else say "runtime dir $(cat files-dir.txt) is gone"; fi

step "11. Or write an envfile for tools that want one (0600; values quoted so they read back exactly)"
run kimen envfile --profile demo --passphrase-cmd "$PASS_CMD" --out "$DEMO/app/.env.runtime"
run cut -d= -f1 "$DEMO/app/.env.runtime"

step "12. A session: unlock once, then no passphrase per command"
say "Every process of this user can use an unlocked session until it is locked or expires (docs/session.md)."
run kimen session start --ttl 5m --passphrase-cmd "$PASS_CMD"
printf '%s$ kimen secret get demo.database_url --unsafe-stdout | wc -c%s\n' "$bold" "$off"
kimen secret get demo.database_url --unsafe-stdout | wc -c
say "(no passphrase source was given: the session served it)"
run kimen session status
run kimen session stop

step "13. Bundles for CI: a signed vault.age that a job opens with nothing but an age identity"
say "keygen makes an age identity; it decrypts bundles and signs the ones you seal."
run kimen bundle keygen --out "$DEMO/ci-key.txt" --print-recipient
RECIPIENT="$(kimen bundle recipient --identity "$DEMO/ci-key.txt")"
run kimen bundle seal --out vault.age --recipient "$RECIPIENT" --identity "$DEMO/ci-key.txt" \
    --profile demo --passphrase-cmd "$PASS_CMD"
say "In the job: no vault, no passphrase. The bundle is decrypted and verified in memory."
run env KIMEN_VAULT="$DEMO/no-such-vault.db" kimen run --bundle vault.age --identity "$DEMO/ci-key.txt" \
    --profile demo -- sh -c 'echo "job: DATABASE_URL has ${#DATABASE_URL} characters, APP_ENV=$APP_ENV"'

step "14. Check the whole setup"
run kimen doctor --profile demo --passphrase-cmd "$PASS_CMD" || say "(warnings are expected with the demo's small KDF)"

step "Done"
say "The throwaway vault in $DEMO is removed now. Read docs/ to go further."
