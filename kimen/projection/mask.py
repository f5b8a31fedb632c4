"""The masker of `kimen run --mask`: every form of every projected value becomes `[masked:NAME]`.

Owns the masked forms of a value and the streaming replacement; the only importer of its matcher
library (`ahocorasick_rs`). Imported only when `--mask` is given. It never writes, logs or raises
with a value: the caller relays what `feed`/`flush` return and nothing else.

Forms of a value of at least `MIN_LENGTH` bytes: the raw bytes; standard and URL-safe base64, padded
and unpadded; `quote(v, safe='')` and `quote_plus(v)`; the JSON string escape (the text between the
quotes) with `ensure_ascii` and, for a UTF-8 value, in raw UTF-8; lower- and upper-case hex; each
line of at least `MIN_LENGTH` bytes of a value with a line break; on a pty also the raw value with
every `\\n` as `\\r\\n` (the line discipline's ONLCR). Shorter values are not masked:
`Masker.unmasked` names them for the caller's warning or refusal.

Matching. One Aho-Corasick automaton over all forms (the Rust `aho-corasick` crate through
`ahocorasick_rs`: a DFA over bytes, no copy of the chunk, several hundred MB/s). pyahocorasick was
measured first and left: its scan alone stays under half the 200 MB/s target (about 80 MB/s of
CPU), it crashes freeing a trie about 1 M nodes deep (the forms of a 1 MiB value) and its reporting
is quadratic on repetitive forms. The automaton reports every occurrence (overlapping); this module
picks leftmost, then longest, and never overlaps replacements (the scan resumes after one). A chunk
is scanned once, plus a window of the `reach` bytes before it so that a form split across writes
(1-byte writes included) is found: the library keeps no state between calls, so the window carries
it.

Releasing. A byte is released as soon as no match can start at or before it. Matches can only
still *start* at a "live" position: one where the rest of the output so far is a proper prefix of
some form. So the masker holds from the smallest live position (the hold) and releases everything
before it at once; a complete match is replaced once no live position lies at or before its start.

The hold must stay cheap per chunk even when a value is large (a 1 MiB PEM has forms of several
MiB, and a form in progress may be held for many writes). So:

- Forms longer than `HEAD` bytes enter the automaton by their first `HEAD` bytes only (which also
  bounds the automaton's size and the scan window). When such a head is found, its position becomes
  a *candidate*, followed against the sorted list of long forms by narrowing a range with `bisect`
  (a trie walk over a sorted array): incremental, so each new byte costs O(log n) however far the
  candidate already got; a complete long form is a match.
- Any other live position lies in the last `reach` (< `HEAD`) bytes. There, only positions where a
  6-byte head of a form begins (a second, small automaton over those bytes) or the last 5 positions
  (a set lookup) can be live; each is checked with one bisection over the sorted forms.

A position found dead stays dead, so each is examined once: the work per chunk is the automaton's scan plus
O(`HEAD`) for the tail. Only a value that repeats itself over long runs (thousands of one
character), met in output that repeats it too, makes candidates cost more than the output's length.
"""

from __future__ import annotations

import base64
import json
from bisect import bisect_left, bisect_right
from collections import deque
from heapq import heappop, heappush
from urllib.parse import quote, quote_plus

import ahocorasick_rs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

MIN_LENGTH = 6  # shorter values are not masked (too many false hits, and too little to hide)
HEAD = 128  # forms longer than this enter the automaton by their first HEAD bytes only
_DFA_LIMIT = 1 << 16  # bytes of automaton keys up to which a DFA is built (fastest; memory grows with it)


def masked_forms(value: bytes, *, pty: bool = False) -> set[bytes]:
    """Every form of `value` that the masker replaces (none below `MIN_LENGTH` bytes)."""
    if len(value) < MIN_LENGTH:
        return set()
    b64 = base64.b64encode(value)
    url = base64.urlsafe_b64encode(value)
    forms = {value, b64, b64.rstrip(b"="), url, url.rstrip(b"="),
             quote(value, safe="").encode(), quote_plus(value).encode(),
             value.hex().encode(), value.hex().upper().encode()}
    try:
        text = value.decode()
    except UnicodeDecodeError:
        # how a Python child sees a non-UTF-8 value in os.environ; its JSON then has \udcXX escapes
        text = value.decode(errors="surrogateescape")
    else:
        forms.add(json.dumps(text, ensure_ascii=False)[1:-1].encode())
    forms.add(json.dumps(text)[1:-1].encode())
    lines = value.splitlines()
    if lines != [value]:  # a line break: each line long enough is a form of its own
        forms.update(line for line in lines if len(line) >= MIN_LENGTH)
    if pty and b"\n" in value:
        forms.add(value.replace(b"\n", b"\r\n"))
    return forms


class Masker:
    """The compiled forms of the projected values (name → bytes); `stream()` masks one output."""

    def __init__(self, values: Mapping[str, bytes], *, pty: bool = False) -> None:
        owner: dict[bytes, bytes] = {}  # form -> its replacement; on a clash the first name in order wins
        unmasked = []
        for name in sorted(values):
            value = values[name]
            if 0 < len(value) < MIN_LENGTH:
                unmasked.append(name)
            replacement = b"[masked:" + name.encode("utf-8", "backslashreplace") + b"]"
            for form in masked_forms(value, pty=pty):
                owner.setdefault(form, replacement)
        self.unmasked: list[str] = unmasked
        """Names of values too short to mask, sorted (empty values have nothing to hide: left out)."""
        self.long_forms = sorted(form for form in owner if len(form) > HEAD)
        self.long_replacements = [owner[form] for form in self.long_forms]
        heads: dict[bytes, tuple[int, int]] = {}  # head of long forms -> their range in long_forms
        for form in self.long_forms:
            if form[:HEAD] not in heads:
                heads[form[:HEAD]] = _narrow(self.long_forms, 0, len(self.long_forms), 0, form[:HEAD])
        # automaton key -> (its replacement when it is a form, the range of long forms it begins)
        keys: dict[bytes, tuple[bytes | None, tuple[int, int] | None]] = {
            form: (replacement, heads.get(form)) for form, replacement in owner.items() if len(form) <= HEAD}
        for head, span in heads.items():
            keys.setdefault(head, (None, span))
        self.keys = sorted(keys)
        self.info = [keys[key] for key in self.keys]
        self.reach = max(map(len, self.keys), default=1) - 1  # the farthest back a live tail position lies
        self.automaton = _automaton(self.keys) if keys else None
        self.heads = _automaton(sorted({key[:MIN_LENGTH] for key in keys})) if keys else None
        self.starts = frozenset(key[:n] for key in keys for n in range(1, MIN_LENGTH))

    def stream(self) -> MaskStream:
        """A fresh masking state for one output stream (stdout and stderr each need one)."""
        return MaskStream(self)

    def is_live(self, rest: bytes) -> bool:
        """Whether `rest` (shorter than HEAD) is a proper prefix of some key: a match may start there."""
        keys = self.keys
        at = bisect_left(keys, rest)
        if at < len(keys) and keys[at] == rest:
            at += 1
        return at < len(keys) and keys[at].startswith(rest)


def _automaton(keys: list[bytes]) -> ahocorasick_rs.BytesAhoCorasick:
    """Every occurrence of `keys` (overlapping), as a DFA while it stays small, else a compact NFA."""
    size = sum(map(len, keys))
    kind = ahocorasick_rs.Implementation.DFA if size <= _DFA_LIMIT else ahocorasick_rs.Implementation.ContiguousNFA
    return ahocorasick_rs.BytesAhoCorasick(keys, matchkind=ahocorasick_rs.MATCHKIND_STANDARD, implementation=kind)


def _narrow(forms: list[bytes], lo: int, hi: int, depth: int, text: bytes) -> tuple[int, int]:
    """The sub-range of `forms[lo:hi]` (sorted, sharing their first `depth` bytes) that goes on with
    `text`. Sorted strings with a common prefix stay sorted by their next bytes: two bisections."""
    end = depth + len(text)

    def key(form: bytes) -> bytes:
        return form[depth:end]

    lo = bisect_left(forms, text, lo, hi, key=key)
    return lo, bisect_right(forms, text, lo, hi, key=key)


class MaskStream:
    """Streaming replacement over one output: `feed(chunk)` returns what can be released now,
    `flush()` the rest at end of stream. Output without a form passes through byte-identical."""

    def __init__(self, masker: Masker) -> None:
        self._m = masker
        self._start()

    def _start(self) -> None:
        """A new stream: nothing held, offset 0."""
        self._buf = bytearray()  # output not yet released, from stream offset `_base`
        self._base = 0
        self._context = b""  # the last `reach` bytes of the stream, released or not
        self._pending: list[tuple[int, int, bytes]] = []  # heap of complete matches (start, -end, mask)
        self._long: deque[list[int]] = deque()  # long-form candidates by start: [start, lo, hi, depth]
        self._dead_below = 0  # no tail position below this is live

    def feed(self, chunk: bytes) -> bytes:
        """Mask `chunk`; return the bytes that no later output can turn into (part of) a match."""
        masker = self._m
        if masker.automaton is None or not chunk:
            return bytes(chunk)
        begin = self._base + len(self._buf)  # stream offset of chunk[0]
        context, reach = self._context, masker.reach
        if context:  # forms split between earlier output and this chunk
            seam = len(context)
            for index, start, end in masker.automaton.find_matches_as_indexes(context + chunk[:reach],
                                                                              overlapping=True):
                if start < seam < end:
                    self._found(index, begin - seam + start, begin - seam + end)
        for index, start, end in masker.automaton.find_matches_as_indexes(chunk, overlapping=True):
            self._found(index, begin + start, begin + end)
        self._context = chunk[-reach:] if len(chunk) >= reach else (context + chunk)[-reach:]
        now = begin + len(chunk)
        if not self._buf and not self._pending and not self._long:  # the common case: one slice
            hold = self._tail_hold(self._base, now)
            self._base = hold
            if hold == now:
                return bytes(chunk)
            self._buf += chunk[hold - now:]
            return chunk[:hold - now]
        self._buf += chunk
        return self._release(final=False)

    def flush(self) -> bytes:
        """End of stream: nothing can match any more; release everything (masked)."""
        out = self._release(final=True) if self._m.automaton is not None else b""
        self._start()  # a later feed starts a new stream
        return out

    def _found(self, index: int, start: int, end: int) -> None:
        replacement, span = self._m.info[index]
        if replacement is not None:
            heappush(self._pending, (start, -end, replacement))
        if span is not None:
            self._long.append([start, span[0], span[1], end - start])

    def _release(self, final: bool) -> bytes:
        buf, base, pending = self._buf, self._base, self._pending
        now = base + len(buf)
        out: list[bytes | bytearray] = []
        pos = base
        hold = self._hold(pos, now, final)
        while pending:
            start, neg_end, replacement = pending[0]
            if start < pos:  # overlaps a replacement already made
                heappop(pending)
                continue
            if start >= hold:  # a match may still start before it, or a longer one at it
                break
            heappop(pending)
            out.append(buf[pos - base:start - base])
            out.append(replacement)
            pos = -neg_end
            if pos > hold:
                hold = self._hold(pos, now, final)
        out.append(buf[pos - base:hold - base])
        del buf[:hold - base]
        self._base = hold
        return b"".join(out)

    def _hold(self, pos: int, now: int, final: bool) -> int:
        """The smallest live position at or after `pos` (`now` if none); at the end, none is live."""
        candidates = self._long
        while candidates:
            if candidates[0][0] >= pos and self._grow(candidates[0], now) and not final:
                return candidates[0][0]
            candidates.popleft()
        return now if final else self._tail_hold(pos, now)

    def _tail_hold(self, pos: int, now: int) -> int:
        """The smallest live position in the last `reach` bytes at or after `pos` (`now` if none)."""
        masker = self._m
        start = max(pos, self._dead_below, now - masker.reach)
        if start >= now:
            return now
        rest = self._context[start - now:]
        assert masker.heads is not None
        for _, at, _ in masker.heads.find_matches_as_indexes(rest, overlapping=True):
            if masker.is_live(rest[at:]):  # where a 6-byte head of a form begins
                self._dead_below = start + at
                return start + at
        for at in range(max(0, len(rest) - MIN_LENGTH + 1), len(rest)):
            if rest[at:] in masker.starts:
                self._dead_below = start + at
                return start + at
        self._dead_below = now
        return now

    def _grow(self, candidate: list[int], now: int) -> bool:
        """Follow a long-form candidate up to `now`, recording the long forms it completes; whether
        a longer one can still match from it."""
        start, lo, hi, depth = candidate
        forms = self._m.long_forms
        offset = start - self._base
        window = 64  # grows: a candidate that dies early costs little, a true match O(log n) a byte
        while lo < hi and start + depth < now:
            nearest = min(len(forms[i]) for i in range(lo, hi))
            step = min(now - start - depth, window, nearest - depth)
            lo, hi = _narrow(forms, lo, hi, depth, bytes(self._buf[offset + depth:offset + depth + step]))
            depth += step
            window *= 2
            if lo < hi and len(forms[lo]) == depth:  # sorted first: the one form equal to the text
                heappush(self._pending, (start, -(start + depth), self._m.long_replacements[lo]))
                lo += 1
        candidate[1:] = lo, hi, depth
        return lo < hi
