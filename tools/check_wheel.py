"""Check what a repaired genfast wheel contains and links against; print it as KEY=VALUE lines.

    python tools/check_wheel.py WHEEL {cpu|cuda}

Run by tools/build_wheel.sh with the tool venv's Python (pyelftools comes with auditwheel). Exits 1
with one line per problem when the wheel bundles or needs a library it must not:

- exactly one extension module, genfast/_C.<abi>.so;
- the only library grafted into genfast.libs/ is GNU OpenMP (libgomp): build_wheel.sh says why;
- no ELF file in the wheel is, or needs, libtorch/libc10 (torch brings its own, and genfast's C++
  never links it) or a shared CUDA library (libcudart is linked statically; libcuda.so.1 is the
  driver, dlopened by the static runtime at the first CUDA call, never a DT_NEEDED);
- a CUDA wheel carries device code (an .nv_fatbin section), a CPU wheel none.
"""

import re
import sys
import zipfile
from io import BytesIO
from pathlib import PurePosixPath

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

EXTENSION = re.compile(r"^genfast/_C\.[^/]+\.so$")
GRAFTABLE = re.compile(r"^libgomp-[0-9a-f]{8}\.so(\.\d+)*$")
FORBIDDEN = re.compile(r"^lib(torch|c10|cudart|cuda|nvrtc|nvJitLink|cublas|cudnn|nccl)([._-]|$)")


def _elf_facts(data: bytes) -> tuple[list[str], set[str]]:
    """(DT_NEEDED entries, section names) of one ELF file."""
    elf = ELFFile(BytesIO(data))
    needed = [tag.needed for section in elf.iter_sections() if isinstance(section, DynamicSection)
              for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
    return needed, {section.name for section in elf.iter_sections()}


def check(wheel_path: str, variant: str) -> tuple[dict[str, str], list[str]]:
    facts, problems = {}, []
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        tags = [line.split(":", 1)[1].strip() for name in names if name.endswith(".dist-info/WHEEL")
                for line in wheel.read(name).decode().splitlines() if line.startswith("Tag:")]
        elves = {name: wheel.read(name) for name in names
                 if re.search(r"\.so(\.\d+)*$", name) and wheel.read(name)[:4] == b"\x7fELF"}
        sizes = {info.filename: info.file_size for info in wheel.infolist()}

    extensions = [name for name in elves if EXTENSION.match(name)]
    bundled = [name for name in elves if name.startswith("genfast.libs/")]
    if len(extensions) != 1:
        problems.append(f"expected one extension module genfast/_C.*.so, found {extensions or 'none'}")
    for name in sorted(set(elves) - set(extensions) - set(bundled)):
        problems.append(f"unexpected shared object {name}")
    for name in bundled:
        if not GRAFTABLE.match(PurePosixPath(name).name):
            problems.append(f"{name} is bundled, but only libgomp may be grafted")

    for name, data in elves.items():
        if FORBIDDEN.match(PurePosixPath(name).name):
            problems.append(f"{name} is a torch or CUDA library and must not ship in the wheel")
        needed, sections = _elf_facts(data)
        for library in needed:
            if FORBIDDEN.match(library):
                problems.append(f"{name} needs {library}: it must come from neither the wheel nor the system")
        if name in extensions:
            facts["needed"] = ", ".join(needed)
            has_device_code = ".nv_fatbin" in sections
            if variant == "cuda" and not has_device_code:
                problems.append(f"{name} has no .nv_fatbin section: the CUDA wheel carries no device code")
            if variant == "cpu" and has_device_code:
                problems.append(f"{name} has an .nv_fatbin section: the CPU wheel was built with CUDA")

    facts["file"] = PurePosixPath(wheel_path).name
    facts["tag"] = ", ".join(tags)
    facts["bundled"] = ", ".join(f"{name} ({sizes[name] // 1024} KiB)" for name in bundled) or "nothing"
    return facts, problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("cpu", "cuda"):
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    facts, problems = check(*argv)
    for key, value in facts.items():
        print(f"{key}={value}")
    for problem in problems:
        print(f"check_wheel: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
