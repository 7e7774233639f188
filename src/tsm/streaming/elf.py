"""Checks of a TVM library's ELF header before it is loaded: the loader maps a truncated file (an interrupted copy
to a board) and the process dies of a bus error, and a library for another CPU fails with a message that does not
say which CPU it was compiled for."""

from __future__ import annotations

import platform
import struct
from pathlib import Path

from tsm.errors import DataError

# e_machine of the ELF header -> platform.machine() of the CPUs format=tvm compiles for
MACHINES = {62: "x86_64", 183: "aarch64"}
TARGETS = {"x86_64": "target=x86", "aarch64": "target=cortex-a72|cortex-a57"}
HEADER = struct.Struct("<4sBB10xHHIQQQIHHHHHH")  # ELF64 little-endian, through e_shstrndx
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
SHARED_OBJECT = 3  # e_type ET_DYN


def check_shared_library(path: str | Path) -> None:
    """Raise :class:`~tsm.errors.DataError` naming what is wrong unless ``path`` is a whole 64-bit little-endian
    shared library for this machine's CPU."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise DataError(path, "not a shared library: no ELF header (format=tvm writes one)")
    if len(data) < HEADER.size or data[4] != 2 or data[5] != 1:
        raise DataError(path, "not a 64-bit little-endian ELF file, the only kind format=tvm writes")
    fields = HEADER.unpack_from(data)
    kind, machine = fields[3], fields[4]
    program_offset, section_offset = fields[7], fields[8]
    program_size, program_count, section_size, section_count = fields[11:15]
    if kind != SHARED_OBJECT:
        raise DataError(path, f"not a shared library (ELF type {kind}; format=tvm writes type {SHARED_OBJECT})")
    built_for, here = MACHINES.get(machine, f"ELF machine {machine}"), platform.machine()
    if built_for != here:
        target = TARGETS.get(built_for, "a target format=tvm does not have")
        raise DataError(path, f"compiled for {built_for} ({target}); this machine is {here}: run it where it belongs")
    ends = [program_offset + program_size * program_count, section_offset + section_size * section_count]
    if ends[0] <= len(data):
        for index in range(program_count):
            segment = PROGRAM_HEADER.unpack_from(data, program_offset + index * program_size)
            ends.append(segment[2] + segment[5])
    if max(ends) > len(data):
        raise DataError(path, f"truncated: its ELF headers need {max(ends)} bytes, the file has {len(data)} "
                              "(an interrupted copy? copy it again)")  # fmt: skip
