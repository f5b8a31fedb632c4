"""Team sync: remotes that hold one signed, chained head each (docs/sync.md).

- `base` (layer 1): the value types of a head (members, membership records, tombstones,
  rotation_due entries, log entries, entries), the transport protocol and its results, member ids
  and scope globs (validation and overlap; matching is `kimen.globs`);
- `chain` (layer 2): the `sync` member of a head, membership record signatures, `members_fp`, join
  requests, and the acceptance rule a puller applies to every head;
- `merge` (layer 2): keyed digests and the baseline MACs, the per-key three-way merge, and the
  construction of the next head (and of the genesis head).

Those three are pure: no file, socket, vault or age I/O. Beside them:

- `transport` (layer 1): the transport checks every head read passes (Git LFS pointer, size, age
  header) and the test-only pause of the kill -9 tests;
- `ratchet` (layer 2): the state kept outside the vault, `<state>/sync/<remote_id>/` (the ratchet,
  the known head's bytes, the acknowledged members);
- `fs`, `git` (layer 4): the transports, which move ciphertext and never decrypt it (`git` runs the
  git CLI).

The vault's sync tables and the commands come in the layers above.
"""
