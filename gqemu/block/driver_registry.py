"""The driver vtable and the registry: ``BlockDriver``, ``bdrv_drivers``
(every driver by name, its module imported on first lookup),
``bdrv_register``, ``bdrv_find_format``, ``bdrv_find_protocol`` and
``bdrv_probe_all``.  ``gqemu.block.driver`` re-exports every name here.

Must not import: gqemu.block.driver (it re-exports us), gqemu.block.io*,
or anything above the block layer.
QEMU: block.c (bdrv_register, bdrv_find_format, bdrv_find_protocol,
bdrv_probe_all), include/block/block_int.h (struct BlockDriver).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

from gqemu.block.module_block import block_driver_modules, block_module_load

__all__ = ["BlockDriver", "bdrv_drivers", "bdrv_register", "bdrv_find_format",
           "bdrv_find_protocol", "bdrv_probe_all"]

# ----------------------------------------------------------------- drivers


class BlockDriver:
    """The driver vtable; an instance is one node's state.

    Slots (``None`` = not implemented), all taking ``bs`` first:
    ``bdrv_open(bs, options, flags)`` (formats) / ``bdrv_file_open(bs,
    filename, options, flags)`` (protocols) raise BlockError;
    ``bdrv_close``; ``bdrv_co_preadv/pwritev(bs, offset, nbytes, qiov,
    flags)``; ``bdrv_co_flush``, ``bdrv_co_flush_to_os``,
    ``bdrv_co_flush_to_disk`` (blkdebug) or ``bdrv_aio_flush(bs, cb, opaque)
    -> acb`` (file-posix, as QEMU 2.8's raw-posix: through the thread pool);
    ``bdrv_co_pdiscard(bs, offset, nbytes)``;
    ``bdrv_co_pwrite_zeroes(bs, offset, nbytes, flags)``;
    ``bdrv_co_get_block_status(bs, offset, nbytes) -> (ret, pnum, map, file)``
    (flags apart from the host offset ``map``; see io_status.py);
    ``bdrv_getlength(bs)``; ``bdrv_truncate(bs, offset)``;
    ``bdrv_refresh_limits(bs)``; ``bdrv_get_info(bs) -> dict``;
    ``bdrv_amend_options(bs, opts, status_cb, force) -> (ret, msg)`` (from
    the loop, ``opts`` typed by ``amend_opts``);
    ``bdrv_debug_event(bs, event)``, ``bdrv_debug_breakpoint(bs, event_name,
    tag)``, ``bdrv_debug_remove_breakpoint/bdrv_debug_resume(bs, tag)``,
    ``bdrv_debug_is_suspended(bs, tag)`` (blkdebug); ``bdrv_check_perm/bdrv_set_perm(bs,
    perm, shared)``; ``bdrv_child_perm(bs, child, role, perm, shared)``.
    ``bdrv_probe(buf, filename) -> score`` is a staticmethod.
    QEMU: struct BlockDriver.
    """

    format_name: str = ""
    protocol_name: Optional[str] = None
    is_filter = False
    has_variable_length = False
    supports_backing = False
    # (name, type, help) of the creation options as qemu-img lists them, types
    # "str", "bool", "num", "size"; none: no image creation (QEMU: create_opts)
    create_opts: tuple[tuple[str, str, str], ...] = ()
    # (name, type, help) of the options ``qemu-img amend`` takes (QEMU: amend_opts)
    amend_opts: tuple[tuple[str, str, str], ...] = ()

    bdrv_probe: Optional[Callable[[bytes, str], int]] = None
    bdrv_open: Optional[Callable[..., None]] = None
    bdrv_file_open: Optional[Callable[..., None]] = None
    bdrv_close: Optional[Callable[..., None]] = None
    bdrv_co_preadv: Optional[Callable[..., int]] = None
    bdrv_co_pwritev: Optional[Callable[..., int]] = None
    bdrv_co_pwritev_compressed: Optional[Callable[..., int]] = None
    bdrv_co_flush: Optional[Callable[..., int]] = None
    bdrv_co_flush_to_os: Optional[Callable[..., int]] = None
    bdrv_co_flush_to_disk: Optional[Callable[..., int]] = None
    bdrv_aio_flush: Optional[Callable[..., Any]] = None
    bdrv_co_pdiscard: Optional[Callable[..., int]] = None
    bdrv_co_pwrite_zeroes: Optional[Callable[..., int]] = None
    bdrv_co_get_block_status: Optional[Callable[..., Any]] = None
    bdrv_getlength: Optional[Callable[..., int]] = None
    bdrv_truncate: Optional[Callable[..., int]] = None
    bdrv_refresh_limits: Optional[Callable[..., None]] = None
    bdrv_get_info: Optional[Callable[..., Any]] = None
    bdrv_debug_event: Optional[Callable[..., None]] = None
    bdrv_debug_breakpoint: Optional[Callable[..., int]] = None
    bdrv_debug_remove_breakpoint: Optional[Callable[..., int]] = None
    bdrv_debug_resume: Optional[Callable[..., int]] = None
    bdrv_debug_is_suspended: Optional[Callable[..., bool]] = None
    bdrv_check_perm: Optional[Callable[..., None]] = None
    bdrv_set_perm: Optional[Callable[..., None]] = None
    bdrv_child_perm: Optional[Callable[..., tuple[int, int]]] = None
    bdrv_has_zero_init: Optional[Callable[..., int]] = None
    bdrv_amend_options: Optional[Callable[..., tuple[int, str]]] = None

    def __repr__(self) -> str:
        return "<BlockDriver %s>" % (self.format_name or self.protocol_name)


class _BlockDrivers(Mapping[str, type[BlockDriver]]):
    """``bdrv_drivers``: every driver by format name, in registration order
    (module_block.py's table, then any driver registered outside it).  The
    names are known from the start; a driver's module is imported when its
    class is first looked up (``bdrv_drivers[name]``, ``.get``,
    ``.values()``), so listing or testing names imports nothing."""

    def __init__(self) -> None:
        self.loaded: dict[str, type[BlockDriver]] = {}
        self.modules = {m.format_name: m.library_name for m in block_driver_modules}

    def __getitem__(self, name: str) -> type[BlockDriver]:
        cls = self.loaded.get(name)
        if cls is None:
            library = self.modules.get(name)
            if library is None:
                raise KeyError(name)
            block_module_load(library)
            cls = self.loaded[name]
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self.modules or name in self.loaded

    def __iter__(self) -> Iterator[str]:
        yield from self.modules
        yield from (n for n in self.loaded if n not in self.modules)

    def __len__(self) -> int:
        return len(self.modules) + sum(1 for n in self.loaded if n not in self.modules)


bdrv_drivers = _BlockDrivers()


def bdrv_register(cls: type[BlockDriver]) -> type[BlockDriver]:
    """Class decorator: add a driver to the registry (when its module is
    imported).  QEMU: bdrv_register."""
    name = cls.format_name
    assert name and name not in bdrv_drivers.loaded, "driver %r registered twice" % name
    bdrv_drivers.loaded[name] = cls
    return cls


def bdrv_find_format(name: str) -> Optional[type[BlockDriver]]:
    """The driver of that format name, its module imported on first use.
    QEMU: bdrv_find_format (with block_module_load)."""
    return bdrv_drivers.get(name)


def bdrv_find_protocol(filename: str) -> Optional[type[BlockDriver]]:
    """The protocol named by a ``proto:`` prefix (before any '/'), else a
    driver whose ``bdrv_probe_device`` claims the file (host_device for
    /dev nodes), else file.  QEMU: bdrv_find_protocol."""
    colon = filename.find(":")
    slash = filename.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        prefix = filename[:colon]
        for m in block_driver_modules:
            if m.protocol_name == prefix:
                return bdrv_drivers[m.format_name]
        for cls in bdrv_drivers.loaded.values():
            if cls.protocol_name == prefix:
                return cls
        return None
    for m in block_driver_modules:
        if m.probe_device:
            probe = getattr(bdrv_drivers[m.format_name], "bdrv_probe_device")
            if probe(filename):
                return bdrv_drivers[m.format_name]
    return bdrv_drivers.get("file")


def bdrv_probe_all(buf: bytes, filename: str) -> Optional[type[BlockDriver]]:
    """Highest probe score wins; ties go to registration order.  Imports
    the drivers that probe (module_block.py's ``probe`` column).
    QEMU: bdrv_probe_all."""
    best, best_score = None, 0
    for name in bdrv_drivers:
        if not _PROBES.get(name, True):
            continue
        cls = bdrv_drivers[name]
        if cls.bdrv_probe is not None:
            score = cls.bdrv_probe(buf, filename)
            if score > best_score:
                best, best_score = cls, score
    return best


_PROBES = {m.format_name: m.probe for m in block_driver_modules}
