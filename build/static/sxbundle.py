#!/usr/bin/env python3
"""sxbundle.py IN OUT: wrap a PyInstaller build into one self-contained ELF.

Uses the (patched, see staticx-0.14.2-runproc.patch) staticx 0.14.2 Python API.

IN may be
  * a PyInstaller *onedir* build (the dist/NAME directory, or the executable
    inside it) -- recommended: one extraction step at run time, and
  * a PyInstaller *onefile* binary -- works, but extracts twice per call (staticx
    bundle dir, then PyInstaller's _MEIxxxxxx), which is ~5x slower to start.

For onedir input every file of the directory is stored in the staticx archive
at its path relative to the directory, so at run time the staticx bundle dir
*is* the onedir layout (sys._MEIPASS == bundle dir, or bundle/_internal), and
the host-independent ld.so/libc/libz/... that the executable, libpython and
the extension modules need are added flat next to the executable.
The archive is stored uncompressed by default: xz decoding of ~15 MB costs
~300 ms per call (measured), copying it costs a few ms.

Build id: after wrapping, a section BUILDID_SECTION is added with
"v1\nid=<sha256 of the whole wrapped file>\napp=<name>\npyi-home=<dir>\n".
The patched bootloader uses the id as the key of its cached unpack (no hashing
at run time), `app` names the cache dirs (/var/lib/<app>/cache, ...), and
`pyi-home` (PyInstaller 6 onedir only: its contents directory) lets it preset
PyInstaller's environment so that PyInstaller skips its restart.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from os.path import basename, isdir, isfile, join, relpath
from typing import Any

from staticx.api import StaticxGenerator
from staticx.elf import get_shobj_deps, get_prog_interp, is_dynamic_elf, LddError
from staticx.hooks import run_hooks
from staticx.constants import ARCHIVE_SECTION
from staticx.elf import elf_add_section
from staticx.utils import move_file


BUILDID_SECTION = ".staticx.buildid"


def pyinstaller_home(exe: str) -> str | None:
    """Contents directory of a PyInstaller >= 6 onedir executable ("_internal",
    "."), or None if exe is not one whose restart we know how to skip."""
    with open(exe, "rb") as f:
        if b"_PYI_PARENT_PROCESS_LEVEL" not in f.read():
            return None  # not PyInstaller 6's bootloader
    try:
        from PyInstaller.archive.readers import CArchiveReader
        options = CArchiveReader(exe).options
    except Exception as e:  # noqa: BLE001 - any failure: just keep the restart
        logging.warning("cannot read PyInstaller options of %s: %s", exe, e)
        return None
    for opt in options:
        if opt.startswith("pyi-contents-directory "):
            return opt.split(" ", 1)[1] or "."
    return "."


def add_build_id(path: str, app: str, pyi_home: str | None) -> str:
    """Add BUILDID_SECTION to the wrapped ELF at path; returns the id."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,31}", app):
        raise SystemExit(f"sxbundle: unusable app name {app!r} (use --app)")
    text = f"v1\nid={h.hexdigest()}\napp={app}\n"
    if pyi_home and (pyi_home == "." or re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,126}", pyi_home)):
        text += f"pyi-home={pyi_home}\n"
    with tempfile.NamedTemporaryFile("w", prefix="sxbuildid-", delete=False) as t:
        t.write(text)
    try:
        elf_add_section(path, BUILDID_SECTION, t.name)
    finally:
        os.unlink(t.name)
    return h.hexdigest()


def find_onedir(path: str) -> tuple[str, str] | None:
    """Return (dir, exe) if path is a PyInstaller onedir build, else None."""
    if isdir(path):
        exe = join(path, basename(os.path.normpath(path)))
        if isfile(exe):
            return os.path.abspath(path), os.path.abspath(exe)
        raise SystemExit(f"sxbundle: {path} is a directory but has no executable {exe}")
    d = os.path.dirname(os.path.abspath(path))
    if isfile(join(d, "base_library.zip")) or isdir(join(d, "_internal")):
        return d, os.path.abspath(path)
    return None


class OnedirGenerator(StaticxGenerator):
    """StaticxGenerator that also stores a whole PyInstaller onedir tree."""

    # Set by StaticxGenerator (untyped); declared here, not assigned.
    tmpoutput: str | None
    tmpprog: str | None

    def __init__(self, onedir: str, prog: str, **kw: Any) -> None:
        super().__init__(prog, **kw)
        self.onedir = onedir

    def _onedir_files(self) -> Iterator[tuple[str, str]]:
        for root, dirs, files in os.walk(self.onedir):
            dirs.sort()
            for f in sorted(files):
                p = join(root, f)
                if os.path.samefile(p, self.orig_prog):
                    continue
                yield p, relpath(p, self.onedir)

    def _add_onedir(self) -> None:
        # Directory where PyInstaller keeps libpython & co (contents_directory)
        internal = join(self.onedir, "_internal")
        libdirs = [internal] if isdir(internal) else [self.onedir]
        elves: list[str] = []
        for path, arcname in self._onedir_files():
            if os.path.islink(path):
                self.sxar.add_symlink(arcname, os.readlink(path))
            else:
                ti = self.sxar.tar.gettarinfo(path, arcname=arcname)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                with open(path, "rb") as f:
                    self.sxar.tar.addfile(ti, f)
                if is_dynamic_elf(path):
                    elves.append(path)
            if "/" not in arcname:
                # occupies a top-level name: never add a host library over it
                self._added_libs[arcname] = path
        # Host libraries needed by libpython / extension modules but not
        # collected by PyInstaller (libc, libm, ld.so, ...) go flat at the top,
        # where the executable's RPATH (patched by the bootloader) finds them.
        for path in elves:
            try:
                deps = get_shobj_deps(path, libpath=libdirs)
            except LddError as e:
                logging.warning("%s", e)
                continue
            for dep in deps:
                if os.path.abspath(dep).startswith(os.path.abspath(self.onedir) + os.sep):
                    continue
                self.add_library(dep, exist_ok=True)

    def generate(self, output: str) -> None:
        # Same steps as StaticxGenerator.generate (staticx 0.14.2), plus the tree.
        self._generate_called = True
        self._get_bootloader()
        orig_interp = get_prog_interp(self.orig_prog)
        from staticx.utils import copy_to_tempfile
        self.tmpprog = copy_to_tempfile(self.orig_prog, prefix='staticx-prog-', delete=False).name
        self._fixup_prog()
        with self.sxar as ar:
            run_hooks(self)
            ar.add_program(self.tmpprog, basename(self.orig_prog))
            ar.add_interp_symlink(orig_interp)
            self._add_onedir()
            for libpath in get_shobj_deps(self.orig_prog):
                self.add_library(libpath, exist_ok=True)
        arf = self.sxar.fileobj
        arf.flush()
        elf_add_section(self.tmpoutput, ARCHIVE_SECTION, arf.name)
        move_file(self.tmpoutput, output)
        self.tmpoutput = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="PyInstaller onedir directory (or its executable), or onefile binary")
    ap.add_argument("output")
    ap.add_argument("--compress", action="store_true",
                    help="xz-compress the archive (smaller file, much slower start-up)")
    ap.add_argument("--strip", action="store_true", help="strip bundled host libraries")
    ap.add_argument("--debug", action="store_true", help="use staticx's debug bootloader")
    ap.add_argument("--app", help="name of the cache dirs (default: the program's file name)")
    ap.add_argument("--no-pyi-preset", action="store_true",
                    help="do not let the bootloader skip PyInstaller's onedir restart")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="sxbundle: %(message)s")
    from staticx import api
    api.verify_tools()
    tmp_out = args.output + ".tmp"
    od = find_onedir(args.input)
    if od:
        gen = OnedirGenerator(od[0], od[1], strip=args.strip, compress=args.compress, debug=args.debug)
    else:
        logging.warning("%s is not a PyInstaller onedir build: wrapping it as one program "
                        "(a onefile build unpacks a second time per call, into $TMPDIR or /tmp: "
                        "slow, and it fails where /tmp is noexec)", args.input)
        gen = StaticxGenerator(args.input, strip=args.strip, compress=args.compress, debug=args.debug)
    with gen:
        gen.generate(output=tmp_out)
    prog = od[1] if od else args.input
    pyi_home = None if (args.no_pyi_preset or not od) else pyinstaller_home(od[1])
    build_id = add_build_id(tmp_out, args.app or basename(prog), pyi_home)
    os.chmod(tmp_out, 0o755)
    os.replace(tmp_out, args.output)
    print(f"sxbundle: wrote {args.output} ({os.path.getsize(args.output)} bytes, "
          f"{'onedir' if od else 'onefile/plain'} input, build id {build_id[:16]}, "
          f"pyi-home {pyi_home or '-'})")


if __name__ == "__main__":
    main()
