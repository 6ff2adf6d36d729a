"""Print the CPython functions and data a Windows object file imports.

.ci/platforms.sh links the Windows targets against an import library of
python313.dll made from exactly these names (no python313.lib can be had
here).  Reads COFF objects (x86-64 and ARM64), prints each undefined
`__imp_` symbol whose name is CPython's (Py*, _Py*) without the prefix,
sorted and once.  Any other undefined symbol is left to the linker, which
must resolve it from the C runtime and system libraries.
"""

from __future__ import annotations

import struct
import sys

MACHINES = {0x8664: "x86-64", 0xAA64: "arm64"}
EXTERNAL = 2


def imports(path: str) -> set[str]:
    with open(path, "rb") as file:
        data = file.read()
    machine, _, _, symtab, nsyms, _, _ = struct.unpack_from("<HHIIIHH", data, 0)
    if machine not in MACHINES:
        raise SystemExit(f"{path}: not a COFF object for x86-64 or ARM64 (machine {machine:#x})")
    strtab = symtab + 18 * nsyms
    names = set()
    index = 0
    while index < nsyms:
        entry = symtab + 18 * index
        raw, value, section, _, storage, naux = struct.unpack_from("<8sIhHBB", data, entry)
        if raw[:4] == b"\0\0\0\0":
            offset = strtab + struct.unpack_from("<I", raw, 4)[0]
            name = data[offset : data.index(b"\0", offset)].decode()
        else:
            name = raw.rstrip(b"\0").decode()
        if section == 0 and storage == EXTERNAL and value == 0 and name.startswith("__imp_"):
            name = name[len("__imp_") :]
            if name.startswith(("Py", "_Py")):
                names.add(name)
        index += 1 + naux
    return names


if __name__ == "__main__":
    found: set[str] = set()
    for path in sys.argv[1:]:
        found |= imports(path)
    print("\n".join(sorted(found)))
