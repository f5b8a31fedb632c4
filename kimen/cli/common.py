"""Flag helpers shared by several command modules (KDF parameters, value reading)."""

from __future__ import annotations

import argparse

from .. import errors
from ..store import KdfParams


def add_kdf_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kdf-memory", metavar="SIZE", help="argon2id memory, e.g. 64MiB (bare number: KiB)")
    parser.add_argument("--kdf-time", metavar="N", help="argon2id passes")
    parser.add_argument("--kdf-parallelism", metavar="N", help="argon2id lanes")


def kdf_from_args(args: argparse.Namespace, default: KdfParams) -> KdfParams:
    """The KDF parameters of the --kdf-* flags over `default`; range-checked (invalid_kdf_params)."""
    from ..durations import parse_size_kib
    from ..vault import kdf_problem

    memory, time_cost, lanes = default.memory_kib, default.time, default.parallelism
    if args.kdf_memory is not None:
        try:
            memory = parse_size_kib(args.kdf_memory)
        except ValueError:
            raise errors.InvalidKdfParams(detail=f"--kdf-memory needs a size such as 64MiB (a bare number is KiB), "
                                          f"not {args.kdf_memory!r}") from None
    if args.kdf_time is not None:
        time_cost = _whole_number("--kdf-time", args.kdf_time)
    if args.kdf_parallelism is not None:
        lanes = _whole_number("--kdf-parallelism", args.kdf_parallelism)
    params = KdfParams(memory_kib=memory, time=time_cost, parallelism=lanes)
    problem = kdf_problem(params)
    if problem:
        raise errors.InvalidKdfParams(
            detail=problem, hint="allowed: memory 8 MiB-2 GiB, time 1-10, parallelism 1-16, memory x time <= 4 GiB"
        )
    return params


def _whole_number(flag: str, text: str) -> int:
    """ASCII decimal digits only: int() would also take `+3`, `1_0` (ten) and non-ASCII digits."""
    if not (text.isascii() and text.isdigit()):
        raise errors.InvalidKdfParams(detail=f"{flag} needs a whole number, not {text!r}")
    return int(text)
