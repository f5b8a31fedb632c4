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
    try:
        if args.kdf_memory is not None:
            memory = parse_size_kib(args.kdf_memory)
        if args.kdf_time is not None:
            time_cost = int(args.kdf_time)
        if args.kdf_parallelism is not None:
            lanes = int(args.kdf_parallelism)
    except ValueError:
        raise errors.InvalidKdfParams(detail="use --kdf-memory 64MiB --kdf-time 3 --kdf-parallelism 4") from None
    params = KdfParams(memory_kib=memory, time=time_cost, parallelism=lanes)
    problem = kdf_problem(params)
    if problem:
        raise errors.InvalidKdfParams(
            detail=problem, hint="allowed: memory 8 MiB-2 GiB, time 1-10, parallelism 1-16, memory x time <= 4 GiB"
        )
    return params
