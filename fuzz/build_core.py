"""Builds the Cython core a second way, out of tree, for fuzzing or for coverage.

    python fuzz/build_core.py sanitized   # clang, ASan + UBSan + libFuzzer coverage counters
    python fuzz/build_core.py coverage    # clang, source-based coverage (-fprofile-instr-generate)

The modules are the ones setup.py lists (EXTENSIONS, read from setup.py without running it). Cython
writes its C into build/VARIANT/c/ (the in-tree *.c of the normal build are never touched), clang compiles
it, and the extensions land in build/VARIANT/ beside their package's mirror (ddc/_core/, ddc/handlers/kafka/):
build/VARIANT/ddc/ mirrors the package with symbolic links to the real sources, so that with build/VARIANT first on PYTHONPATH
`import ddc` is the checkout's Python code over these extensions (fuzz/env.sh sets that up).

Only what changed is rebuilt: Cython skips a module whose C is newer than its .pyx and .pxd files, and an
extension is recompiled when its C file or this script's flags changed.
"""

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCE = REPOSITORY / "ddc"
DIRECTIVES = {"boundscheck": False, "wraparound": False, "cdivision": True}  # as setup.py

# -fwrapv is left out on purpose (the normal build has it from Python's CFLAGS): UBSan then reports signed
# overflow too. -fno-sanitize-recover makes every UBSan report fatal, so libFuzzer keeps the input.
VARIANTS = {
    "sanitized": {
        "cflags": ["-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                   "-fno-sanitize-recover=all", "-fsanitize=fuzzer-no-link",
                   f"-fsanitize-coverage-ignorelist={Path(__file__).resolve().parent / 'coverage_ignore.txt'}"],
        "ldflags": ["-fsanitize=address,undefined", "-fsanitize=fuzzer-no-link"],
    },
    "coverage": {
        "cflags": ["-g", "-O0", "-fprofile-instr-generate", "-fcoverage-mapping"],
        "ldflags": ["-fprofile-instr-generate"],
    },
}


def setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """EXTENSIONS and LIBRARIES as setup.py assigns them: dotted module names, and libraries by module."""
    found = {}
    for node in ast.parse((REPOSITORY / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("EXTENSIONS", "LIBRARIES"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["EXTENSIONS"], found.get("LIBRARIES", {})


def mirror_package(root: Path, modules: list[str]) -> None:
    """root/ddc: links to every entry of ddc/, except that the folders holding extensions (and the folders above
    them) are real folders, without the extensions built in place, so that this build's land there."""
    holders = {Path(*module.split(".")[:-1]) for module in modules}
    real = {parent for holder in holders for parent in (holder, *holder.parents) if parent != Path(".")}
    for relative in sorted(real):
        folder, target = root / relative, REPOSITORY / relative
        if folder.is_symlink():  # an earlier build linked the whole folder: never write through it
            folder.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        wanted = set()
        for entry in target.iterdir():
            if entry.name == "__pycache__" or relative / entry.name in real:
                continue
            if relative in holders and entry.suffix in (".so", ".c"):
                continue
            wanted.add(entry.name)
            link = folder / entry.name
            if link.is_symlink() and os.readlink(link) == str(entry):
                continue
            if link.is_symlink() or link.is_file():
                link.unlink()
            elif link.is_dir():
                shutil.rmtree(link)
            link.symlink_to(entry)
        for link in folder.iterdir():  # a source that was removed or renamed
            if link.is_symlink() and link.name not in wanted:
                link.unlink()


def require_clang() -> str:
    clang = shutil.which(os.environ.get("CLANG", "clang"))
    if clang is None:
        sys.exit("clang is missing: run fuzz/build.sh (it installs Debian's clang) or apt-get install -y clang")
    return clang


def compile_module(clang: str, name: str, c_file: Path, root: Path, variant: str, libraries: list[str]) -> str:
    flags = VARIANTS[variant]
    include = [f"-I{sysconfig.get_paths()['include']}", f"-I{SOURCE / '_core'}"]
    compile_command = [clang, "-fPIC", "-D_GNU_SOURCE", "-DNDEBUG", *include, *flags["cflags"], "-c", str(c_file)]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = root / Path(*name.split(".")).with_name(name.split(".")[-1] + suffix)
    objects = root / "obj"
    objects.mkdir(exist_ok=True)
    obj = objects / f"{name}.o"
    stamp = objects / f"{name}.stamp"
    link_command = [clang, "-shared", *flags["ldflags"], str(obj), "-o", str(target),
                    *[f"-l{library}" for library in libraries]]
    listed = [Path(flag.split("=", 1)[1]).read_bytes() for flag in compile_command if flag.startswith("-fsanitize-coverage-ignorelist=")]
    fingerprint = hashlib.sha256(c_file.read_bytes() + repr((compile_command, link_command, listed)).encode()).hexdigest()
    if target.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return f"{name}: up to date"
    subprocess.run([*compile_command, "-o", str(obj)], check=True)
    subprocess.run(link_command, check=True)
    stamp.write_text(fingerprint)
    return f"{name}: built {target.relative_to(REPOSITORY)}"


def build_hooks(clang: str, root: Path) -> str:
    """libddc_libfuzzer_hooks.so, preloaded after libFuzzer so that atheris's custom mutator is used
    (fuzz/libfuzzer_hooks.c says why)."""
    source = Path(__file__).resolve().parent / "libfuzzer_hooks.c"
    target = root / "libddc_libfuzzer_hooks.so"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return "libfuzzer hooks: up to date"
    subprocess.run([clang, "-O1", "-g", "-fPIC", "-shared", str(source), "-o", str(target), "-ldl"], check=True)
    return f"libfuzzer hooks: built {target.relative_to(REPOSITORY)}"


def build(variant: str, jobs: int) -> Path:
    from Cython.Build import cythonize
    from setuptools import Extension

    clang = require_clang()
    root = REPOSITORY / "build" / variant
    modules, libraries = setup_lists()
    mirror_package(root, modules)
    os.chdir(REPOSITORY)  # Cython names sources relative to here in the C comments ("ddc/_core/x.pyx":N)
    extensions = cythonize(
        [Extension(name, [name.replace(".", "/") + ".pyx"], include_dirs=["ddc/_core"]) for name in modules],
        build_dir=str(root / "c"), language_level=3, compiler_directives=DIRECTIVES, quiet=True)
    with ThreadPoolExecutor(jobs) as pool:
        results = pool.map(lambda pair: compile_module(clang, pair[0], Path(pair[1].sources[0]), root, variant,
                                                       libraries.get(pair[0], [])),
                           zip(modules, extensions))
        for line in results:
            print(line)
    if variant == "sanitized":
        print(build_hooks(clang, root))
    return root


def main() -> int:
    variant = sys.argv[1] if len(sys.argv) > 1 else "sanitized"
    if variant not in VARIANTS:
        sys.exit(f"usage: {sys.argv[0]} [{'|'.join(VARIANTS)}]")
    jobs = int(os.environ.get("JOBS", "1"))
    root = build(variant, jobs)
    print(f"{variant} build in {root.relative_to(REPOSITORY)}; use it with: . fuzz/env.sh {variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
