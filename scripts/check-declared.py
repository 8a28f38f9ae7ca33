#!/usr/bin/env python3
"""Fails when the sources need something that scripts/bootstrap.sh does not declare.

Called by ``scripts/bootstrap.sh --check-declared`` with the declared Debian
packages, ``--``, and the declared Python requirements. It scans:

- the C headers that ``Sources/*/shim.h`` and ``Benchmarks/Sources/*/shim.h``
  include, and the pkg-config modules of Package.swift: the Debian package
  that owns each (``dpkg -S``) must be declared;
- the Python modules imported by Python code the tests run (the triple-quoted
  Python in ``Tests/**/*.swift``, and ``python/**/*.py``): each must be in the
  standard library, be the repository's own package, or come from a declared
  requirement (or from python/pyproject.toml's dependencies).
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Import names that differ from their distribution names.
IMPORT_ALIASES = {"yaml": "pyyaml", "google_crc32c": "google-crc32c", "crc32c": "crc32c", "google": "protobuf", "grpc_tools": "grpcio-tools"}


def normalize(requirement: str) -> str:
    name = re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")


def owning_package(path: str) -> str | None:
    result = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.split(":", 1)[0].strip()


def header_needs() -> list[tuple[str, str]]:
    """(what, file pattern for dpkg -S) for every system header and pkg-config module."""
    needs = []
    for shim in list(ROOT.glob("Sources/*/shim.h")) + list(ROOT.glob("Benchmarks/Sources/*/shim.h")):
        for header in re.findall(r"#include\s*<([^>]+)>", shim.read_text()):
            needs.append((f"{shim.relative_to(ROOT)}: <{header}>", f"/usr/include/{header}"))
    package_swift = (ROOT / "Package.swift").read_text()
    for module in re.findall(r'pkgConfig:\s*"([^"]+)"', package_swift):
        needs.append((f"Package.swift: pkg-config module {module}", f"*/pkgconfig/{module}.pc"))
    return needs


def python_blocks() -> list[tuple[pathlib.Path, str]]:
    blocks = []
    for swift in ROOT.glob("Tests/**/*.swift"):
        text = swift.read_text()
        for block in re.findall(r'"""(.*?)"""', text, flags=re.S):
            blocks.append((swift, block))
    for py in ROOT.glob("python/**/*.py"):
        blocks.append((py, py.read_text()))
    return blocks


def imported_modules(code: str) -> set[str]:
    modules = set()
    for match in re.finditer(r"^\s*(?:from\s+([A-Za-z_]\w*)[\w.]*\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*))", code, flags=re.M):
        if match.group(1):
            modules.add(match.group(1))
        else:
            for part in match.group(2).split(","):
                modules.add(part.strip().split(".")[0].split(" ")[0])
    return modules


def pyproject_dependencies() -> tuple[set[str], set[str]]:
    """(declared dependency names, own top-level package names) from python/pyproject.toml."""
    pyproject = ROOT / "python" / "pyproject.toml"
    if not pyproject.exists():
        return set(), set()
    text = pyproject.read_text()
    declared = {normalize(item) for item in re.findall(r'"([A-Za-z0-9_.\-\[\]]+[^"]*)"', text) if not item.startswith(("setuptools", "wheel"))}
    own = {path.name for path in (ROOT / "python").glob("src/*") if path.is_dir()}
    own |= {path.parent.name for path in (ROOT / "python").glob("*/__init__.py")}
    return declared, own


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    apt = set(argv[:split])
    requirements = {normalize(item) for item in argv[split + 1:]}
    pyproject_declared, own_packages = pyproject_dependencies()
    problems = []

    for what, pattern in header_needs():
        package = owning_package(pattern)
        if package is None:
            problems.append(f"{what}: no installed Debian package provides {pattern} (install it, then declare it)")
        elif package.split(":")[0] not in apt:
            problems.append(f"{what}: provided by Debian package {package}, which bootstrap.sh does not declare")

    stdlib = set(sys.stdlib_module_names)
    declared_python = requirements | pyproject_declared
    for path, code in python_blocks():
        for module in sorted(imported_modules(code)):
            if module in stdlib or module in own_packages or module.startswith("_"):
                continue
            distribution = IMPORT_ALIASES.get(module, module).lower().replace("_", "-")
            if distribution not in declared_python:
                problems.append(f"{path.relative_to(ROOT)}: imports '{module}', which no declared Python requirement provides")

    if problems:
        print("check-declared: the sources need what bootstrap does not declare:")
        for problem in sorted(set(problems)):
            print("  " + problem)
        return 1
    print(f"check-declared: every need is declared ({len(header_needs())} system headers and pkg-config modules, "
          f"{len(python_blocks())} Python sources)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
