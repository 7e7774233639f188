"""Checks of a TVM library's ELF header before it is loaded: the loader maps a truncated file (an interrupted copy
to a board) and the process dies of a bus error, and a library for another CPU architecture fails with a message
that does not say which one it was compiled for."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from tsm.errors import DataError

# e_machine of the ELF header -> the architecture, and the export option that compiles for it
MACHINES = {62: "x86_64", 183: "aarch64"}
BUILT_BY = {"x86_64": "target=x86 on an x86 machine", "aarch64": "target=cortex-a72|cortex-a57"}
HEADER = struct.Struct("<4sBB10xHHIQQQIHHHHHH")  # ELF64 little-endian, through e_shstrndx
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
SHARED_OBJECT = 3  # e_type ET_DYN
MAGIC = b"\x7fELF"


def check_shared_library(path: str | Path) -> None:
    """Raise :class:`~tsm.errors.DataError` naming what is wrong unless ``path`` is a whole 64-bit little-endian
    shared library for the architecture of this Python (its own ELF header tells which). Reads the headers only."""
    with open(path, "rb") as file:
        header, size = file.read(HEADER.size), os.fstat(file.fileno()).st_size
        if not MAGIC.startswith(header[:4]):  # an empty file or a cut inside the magic is truncated below
            raise DataError(path, "not a shared library: no ELF header (format=tvm writes one)")
        if len(header) < HEADER.size:
            raise DataError(path, f"truncated: {size} bytes, shorter than an ELF header (an interrupted copy?)")
        if header[4] != 2 or header[5] != 1:
            raise DataError(path, "not a 64-bit little-endian ELF file, the only kind format=tvm writes")
        fields = HEADER.unpack(header)
        kind, machine = fields[3], fields[4]
        program_offset, section_offset = fields[7], fields[8]
        program_size, program_count, section_size, section_count = fields[11:15]
        if kind != SHARED_OBJECT:
            raise DataError(path, f"not a shared library (ELF type {kind}; format=tvm writes type {SHARED_OBJECT})")
        with open(sys.executable, "rb") as own:  # this Python's architecture: the same header's e_machine
            here = HEADER.unpack(own.read(HEADER.size))[4]
        if machine != here:
            built_for = MACHINES.get(machine, f"ELF machine {machine}")
            by = BUILT_BY.get(built_for, "no target format=tvm has")
            raise DataError(
                path,
                f"compiled for {built_for} ({by}); this machine is {MACHINES.get(here, f'ELF machine {here}')}: "
                "run it on the CPU it was compiled for",
            )
        if program_count and program_size != PROGRAM_HEADER.size:
            raise DataError(path, f"program headers of {program_size} bytes, not ELF64's {PROGRAM_HEADER.size}")
        ends = [program_offset + program_size * program_count, section_offset + section_size * section_count]
        if ends[0] <= size:
            file.seek(program_offset)
            table = file.read(program_size * program_count)
            ends += [offset + length for _, _, offset, _, _, length, _, _ in PROGRAM_HEADER.iter_unpack(table)]
    if max(ends) > size:
        raise DataError(path, f"truncated: its ELF headers say it has at least {max(ends)} bytes, the file has {size} "
                              "(an interrupted copy? copy it again)")  # fmt: skip
