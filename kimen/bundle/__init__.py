"""Bundles: signed, versioned documents of secrets, age-encrypted to recipients.

- `keys`: identities (decrypt and sign), recipients and signer ids;
- `age`: the one importer of pyrage: the age pre-parse (kimen.agefmt), in-memory decryption and
  encryption;
- `document`: the canonical JSON document, its signature, trust and freshness checks;
- `store`: the read-only store a decrypted bundle serves projections from.

Nothing here writes a file: callers write through `kimen.fsutil`.
"""
