"""Team sync: remotes that hold one signed, chained head each (docs/sync.md).

- `base` (layer 1): the value types of a head (members, membership records, tombstones,
  rotation_due entries, log entries, entries), the transport protocol and its results, member ids
  and scope globs (validation and overlap; matching is `kimen.globs`);
- `chain` (layer 2): the `sync` member of a head, membership record signatures, `members_fp`, join
  requests, and the acceptance rule a puller applies to every head;
- `merge` (layer 2): keyed digests and the baseline MACs, the per-key three-way merge, and the
  construction of the next head (and of the genesis head).

Everything here is pure: no file, socket, vault or age I/O. Transports, the vault's sync tables
and the commands come in the layers above.
"""
