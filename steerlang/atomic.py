"""Write a file or a folder whole or not at all, with the user's umask.

Files: a temporary sibling, then ``os.replace`` (atomic on POSIX and Windows).

Folders: ``rename(2)`` cannot replace a non-empty folder, and the usual "rename the old one aside,
rename the new one in" leaves a moment where nothing is at the path (a reader then fails, and a
crash there leaves no folder at all). `replace_dir` instead *exchanges* the two folders in one
system call where the kernel offers it (Linux ``renameat2(RENAME_EXCHANGE)``, ext4, xfs, btrfs,
tmpfs, overlayfs...): the path always names a complete folder, old or new, and the old one ends up
under the temporary name, from where it is deleted. Elsewhere it falls back to the two renames,
keeping the old folder under a fixed name (``.<name>.old``) so that `recover_dir`, which every
writer and `load_dictionary` call first, puts it back if a crash fell between the two renames.

Modes: ``tempfile.mkdtemp`` makes 0700 folders and safetensors' ``save_file`` 0600 files; shipped
and cached files should read like any other, so temporary folders here are made with ``mkdir``
(which applies the umask) and `chmod_default` gives tensor files the mode ``open()`` would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import uuid
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (readers never see half a file); creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- modes ----------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` can only be
    read by setting it, which briefly exposes other threads' new files to a zero umask)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_default(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open(path, "w")`` would have (0666 minus the umask)."""
    os.chmod(path, 0o666 & ~current_umask())


def chmod_tree_default(root: str | os.PathLike) -> None:
    """`chmod_default` for every file under `root`, 0777 minus the umask for folders; keeps
    executable bits of files that have them."""
    mask = current_umask()
    root = Path(root)
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        if p.is_dir():
            p.chmod(0o777 & ~mask)
        else:
            p.chmod((0o777 if p.stat().st_mode & 0o111 else 0o666) & ~mask)


# -- folders --------------------------------------------------------------------------------
def temp_dir_beside(final: str | os.PathLike, tag: str = "tmp") -> Path:
    """A new empty folder next to `final` (same file system, so it can be renamed onto it), made
    with ``mkdir`` so the umask applies; hidden (``.<name>.<tag>-<unique>``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _old_name(final: Path) -> Path:
    return final.parent / f".{final.name}.old"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the OS or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no renameat2 in this libc (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(err, os.strerror(err), str(b))


def recover_dir(final: str | os.PathLike) -> None:
    """Undo a two-rename swap cut short: if `final` is missing but its old copy is kept aside,
    rename the old copy back (the replacement never happened)."""
    final = Path(final)
    old = _old_name(final)
    if not final.exists() and old.is_dir():
        with contextlib.suppress(FileNotFoundError, FileExistsError):
            os.rename(old, final)


def replace_dir(new: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the complete folder `new` at `final`, replacing the folder there; see the module
    docstring for why readers always see a whole folder. `new` must be a sibling of `final`."""
    new, final = Path(new), Path(final)
    recover_dir(final)
    if not final.exists():
        os.rename(new, final)
        return final
    if not final.is_dir():
        raise FileExistsError(f"{final}: exists and is not a folder")
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old contents
        return final
    old = _old_name(final)
    shutil.rmtree(old, ignore_errors=True)
    os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        recover_dir(final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temps(final: str | os.PathLike, tag: str = "tmp") -> None:
    """Delete `temp_dir_beside(final, tag)` folders whose process is gone (killed with no chance to
    clean up); folders of running processes are left alone."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for p in final.parent.glob(f".{final.name}.{tag}-*"):
        pid = p.name[len(f".{final.name}.{tag}-"):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
