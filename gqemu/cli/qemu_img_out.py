"""gqemu-img helpers: ``info`` and ``check`` reports,
snapshot commands, and qemu-img's output conventions (``size_to_str``,
QDict key order in ``--output=json``).

QEMU: qemu-img.c, block/qapi.c (bdrv_image_info_dump, bdrv_snapshot_dump),
qobject/qdict.c (tdb_hash bucket order), util/cutils.c size_to_str.
"""
from __future__ import annotations

import errno
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from gqemu.cli.qemu_img_tool import ImgError, error_report

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend


def size_to_str(val: int) -> str:
    """``%0.3g`` with a binary suffix.  QEMU: size_to_str."""
    _, e = math.frexp(val / (1000.0 / 1024.0))
    i = int((e - 1) / 10)
    i = max(0, min(i, 6))
    return "%0.3g %sB" % (val / (1 << (i * 10)), ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i])


def _tdb_hash(name: str) -> int:
    v = (0x238F13AF * len(name)) & 0xFFFFFFFF
    for i, c in enumerate(name.encode()):
        v = (v + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return ((1103515243 * v + 12345) & 0xFFFFFFFF) % 512


def qdict_order(d: Any) -> Any:
    """Reorder dicts (recursively) as QEMU's QDict iterates them: by hash
    bucket, and within a bucket the last inserted first."""
    if isinstance(d, dict):
        keys = list(d)
        idx = {k: i for i, k in enumerate(keys)}
        return {k: qdict_order(d[k]) for k in sorted(keys, key=lambda k: (_tdb_hash(k), -idx[k]))}
    if isinstance(d, list):
        return [qdict_order(x) for x in d]
    return d


def dump_json(obj: Any) -> None:
    import json         # only --output=json: kept off the one-shot start-up
    import re
    text = json.dumps(qdict_order(obj), indent=4)
    # QEMU's pretty printer opens an empty list or dict on its own line
    text = re.sub(r'(?m)^( *)("[^"\n]*": )?(\[\]|\{\})', lambda m: "%s%s%s\n%s%s" % (
        m.group(1), m.group(2) or "", m.group(3)[0], m.group(1), m.group(3)[1]), text)
    sys.stdout.write(text + "\n")


def run_co(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a coroutine function to completion from the tool's main loop."""
    from gqemu.aio import qemu_get_aio_context
    from gqemu.block.io_misc import bdrv_poll_co
    return bdrv_poll_co(qemu_get_aio_context(), fn, *args)


def _qcow2_state(blk: BlockBackend) -> Any:
    from gqemu.block import blk_bs
    bs = blk_bs(blk)
    drv = bs.drv if bs is not None else None
    return bs, (drv if drv is not None and drv.format_name == "qcow2" else None)


def creation_error(fmt: str) -> str:
    """Why ``fmt`` cannot be created: no such format, or a driver that
    does not create images (bochs, blkdebug, ...).  QEMU: bdrv_img_create,
    img_convert (drv->create_opts)."""
    from gqemu.block import bdrv_drivers
    if fmt in ("file", "host_device"):          # QEMU creates these; gqemu does not
        return "Creating '%s' images is not implemented in gqemu" % fmt
    if fmt in bdrv_drivers:
        return "Format driver '%s' does not support image creation" % fmt
    return "Unknown file format '%s'" % fmt


# -------------------------------------------------------------------- info


def _snapshot_infos(s: Any) -> list[dict]:
    out = []
    for sn in s.snapshots:
        d = {"id": sn.id_str, "name": sn.name, "vm-state-size": sn.vm_state_size,
             "date-sec": sn.date_sec, "date-nsec": sn.date_nsec,
             "vm-clock-sec": sn.vm_clock_nsec // 1000000000,
             "vm-clock-nsec": sn.vm_clock_nsec % 1000000000}
        if sn.icount != -1:
            d["icount"] = sn.icount
        out.append(d)
    return out


def _allocated_file_size(bs: Any, filename: str) -> int:
    """The host bytes under a node: its file's, or the sum over its data
    children (quorum's).  Raises OSError.  QEMU: bdrv_get_allocated_file_size
    (bdrv_sum_allocated_file_size)."""
    while bs.file is not None:
        bs = bs.file.bs
    if bs.children:
        return sum(_allocated_file_size(c.bs, "") for c in bs.children
                   if c.name != "backing")
    return os.stat(bs.filename or filename).st_blocks * 512


def _generic_info(bs: Any, info: dict) -> None:
    """A format other than qcow2: its cluster size (when not 0) and
    backing file name.  QEMU: bdrv_query_image_info (bdrv_get_info,
    bs->backing_file)."""
    if bs.drv.bdrv_get_info is not None:
        size = bs.drv.bdrv_get_info(bs).get("cluster_size", 0)
        if size:
            info["cluster-size"] = size
    name = getattr(bs.drv, "backing_file", None)
    if name:
        from gqemu.block.refresh_filename import bdrv_full_backing_filename
        info["backing-filename"] = name
        full = bdrv_full_backing_filename(bs, name)
        if full is not None:
            info["full-backing-filename"] = full


def image_info(blk: BlockBackend, filename: str) -> dict:
    """The fields of QEMU's ImageInfo.  QEMU: bdrv_query_image_info."""
    from gqemu.block import blk_getlength
    from gqemu.block.qcow2_header import (QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY)
    bs, s = _qcow2_state(blk)
    info: dict = {"filename": filename, "format": bs.drv.format_name,
                  "virtual-size": blk_getlength(blk)}
    from gqemu.block.refresh_filename import bdrv_full_backing_filename
    try:
        info["actual-size"] = _allocated_file_size(bs, filename)
    except OSError:
        pass
    if bs.drv.bdrv_get_info is not None:       # else: no dirty flag (-ENOTSUP)
        info["dirty-flag"] = False
    if s is None:
        _generic_info(bs, info)
        return info
    info["cluster-size"] = s.cluster_size
    info["dirty-flag"] = bool(s.incompatible_features & QCOW2_INCOMPAT_DIRTY)
    if s.backing_file:
        info["backing-filename"] = s.backing_file
        full = bdrv_full_backing_filename(bs, s.backing_file)
        if full is not None:
            info["full-backing-filename"] = full
        if s.backing_format:
            info["backing-filename-format"] = s.backing_format
    if s.snapshots and not s.has_data_file:     # qcow2_snapshot_list: -ENOTSUP
        info["snapshots"] = _snapshot_infos(s)
    from gqemu.block.qcow2_zstd import compression_type_name
    data: dict = {"compat": "0.10" if s.qcow_version == 2 else "1.1",
                  "compression-type": compression_type_name(s.header.compression_type)}
    if s.qcow_version >= 3:
        data["lazy-refcounts"] = bool(s.compatible_features & 1)
        from gqemu.block.qcow2_bitmap import Qcow2BitmapError, qcow2_get_bitmap_info_list
        try:
            bitmaps = run_co(qcow2_get_bitmap_info_list, bs)
        except Qcow2BitmapError:
            bitmaps = None
        if bitmaps is not None:
            data["bitmaps"] = bitmaps
    data["refcount-bits"] = s.refcount_bits
    from gqemu.block.qcow2_data_file import qcow2_data_file_info
    df: dict = {}
    qcow2_data_file_info(bs, df)
    data.update((k.replace(" ", "-"), v) for k, v in df.items())
    if s.crypt_method_header:
        info["encrypted"] = True
        data["encrypt"] = {"format": "aes"}
    if s.qcow_version >= 3:
        data["corrupt"] = bool(s.incompatible_features & QCOW2_INCOMPAT_CORRUPT)
        data["extended-l2"] = s.extended_l2
    info["format-specific"] = {"type": "qcow2", "data": data}
    return info


def snapshot_table(snaps: list[dict]) -> str:
    """QEMU: bdrv_snapshot_dump (header and one line per snapshot)."""
    lines = ["%-10s%-17s%8s%20s%13s%11s" % ("ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
                                              "ICOUNT")]
    for d in snaps:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["date-sec"]))
        secs = d["vm-clock-sec"]
        clock = "%02d:%02d:%02d.%03d" % (secs // 3600, secs // 60 % 60, secs % 60,
                                          d["vm-clock-nsec"] // 1000000)
        icount = str(d["icount"]) if "icount" in d else ""
        lines.append("%-9s %-16s %8s%20s%13s%11s" % (d["id"], d["name"],
                                                     size_to_str(d["vm-state-size"]),
                                                     date, clock, icount))
    return "\n".join(lines) + "\n"


def dump_info(infos: list[dict], output: str, chain: bool) -> None:
    """QEMU: bdrv_image_info_dump / the JSON visitor."""
    if output == "json":
        if chain:
            dump_json(infos)
        else:
            dump_json(infos[0])
        return
    out = []
    for n, info in enumerate(infos):
        if n:
            out.append("\n")
        out.append("image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\n" % (
            info["filename"], info["format"], size_to_str(info["virtual-size"]),
            info["virtual-size"]))
        out.append("disk size: %s\n" % size_to_str(info["actual-size"])
                   if "actual-size" in info else "disk size: unavailable\n")
        if info.get("encrypted"):
            out.append("encrypted: yes\n")
        if "cluster-size" in info:
            out.append("cluster_size: %d\n" % info["cluster-size"])
        if info.get("dirty-flag"):
            out.append("cleanly shut down: no\n")
        if "backing-filename" in info:
            b, full = info["backing-filename"], info.get("full-backing-filename")
            out.append("backing file: %s%s\n" % (b, " (cannot determine actual path)"
                                                  if full is None else "" if b == full
                                                  else " (actual path: %s)" % full))
            if "backing-filename-format" in info:
                out.append("backing file format: %s\n" % info["backing-filename-format"])
        if "snapshots" in info:
            out.append("Snapshot list:\n" + snapshot_table(info["snapshots"]))
        if "format-specific" in info:
            out.append("Format specific information:\n")
            _dump_qobject(out, 1, qdict_order(info["format-specific"]["data"]))
    sys.stdout.write("".join(out))


def _dump_qobject(out: list[str], indent: int, obj: Any) -> None:
    """QEMU: block/qapi.c dump_qdict / dump_qlist / dump_qobject."""
    items = obj.items() if isinstance(obj, dict) else \
        (("[%d]" % i, v) for i, v in enumerate(obj))
    for k, v in items:
        composite = isinstance(v, (dict, list))
        out.append("%s%s:%s" % (" " * (indent * 4), k.replace("-", " "),
                                "\n" if composite else " "))
        if composite:
            _dump_qobject(out, indent + 1, v)
        else:
            out.append("%s\n" % (str(v).lower() if isinstance(v, bool) else v))


# ------------------------------------------------------------------- check


def _check_dict(res: Any, filename: str) -> dict:
    d: dict = {"filename": filename, "format": "qcow2", "check-errors": res.check_errors}
    for key, v in (("image-end-offset", res.image_end_offset), ("corruptions", res.corruptions),
                   ("leaks", res.leaks), ("corruptions-fixed", res.corruptions_fixed),
                   ("leaks-fixed", res.leaks_fixed), ("total-clusters", res.total_clusters),
                   ("allocated-clusters", res.allocated_clusters),
                   ("fragmented-clusters", res.fragmented_clusters),
                   ("compressed-clusters", res.compressed_clusters)):
        if v:
            d[key] = v
    return d


def _bdrv_check(bs: Any, s: Any, fix: int) -> Any:
    """One check pass; a node that a fatal corruption took out of service
    (QEMU: bs->drv = NULL, e.g. marked corrupt by the repair before it) fails
    with ENOMEDIUM.  QEMU: bdrv_co_check."""
    from gqemu.block.qcow2_check import BdrvCheckResult, qcow2_co_check
    if s.disabled:
        res = BdrvCheckResult()
        res.ret = -errno.ENOMEDIUM
        return res
    return run_co(qcow2_co_check, bs, fix)


def run_check(blk: BlockBackend, filename: str, fix: int, output: str, quiet: bool,
              error_report: Callable[[str], None]) -> int:
    """qemu-img check.  QEMU: img_check / collect_image_check."""
    bs, s = _qcow2_state(blk)
    if s is None:
        error_report("This image format does not support checks")
        return 63
    res = _bdrv_check(bs, s, fix)
    ret = res.ret
    fixed = (res.leaks_fixed, res.corruptions_fixed)
    if ret >= 0 and (res.leaks_fixed or res.corruptions_fixed):
        if output == "human" and not quiet:
            sys.stdout.write("The following inconsistencies were found and repaired:\n\n"
                             "    %d leaked clusters\n    %d corruptions\n\n"
                             "Double checking the fixed image now...\n" % fixed)
        res = _bdrv_check(bs, s, 0)
        ret = res.ret
        res.leaks_fixed, res.corruptions_fixed = fixed
    if ret >= 0 and not quiet:
        if output == "json":
            dump_json(_check_dict(res, filename))
        else:
            out = []
            if not res.corruptions and not res.leaks and not res.check_errors:
                out.append("No errors were found on the image.\n")
            else:
                if res.corruptions:
                    out.append("\n%d errors were found on the image.\nData may be corrupted, "
                               "or further writes to the image may corrupt it.\n" % res.corruptions)
                if res.leaks:
                    out.append("\n%d leaked clusters were found on the image.\nThis means "
                               "waste of disk space, but no harm to data.\n" % res.leaks)
                if res.check_errors:
                    out.append("\n%d internal errors have occurred during the check.\n"
                               % res.check_errors)
            if res.total_clusters and res.allocated_clusters:
                a = res.allocated_clusters
                out.append("%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
                           "clusters\n" % (a, res.total_clusters, a * 100.0 / res.total_clusters,
                                           res.fragmented_clusters * 100.0 / a,
                                           res.compressed_clusters * 100.0 / a))
            if res.image_end_offset:
                out.append("Image end offset: %d\n" % res.image_end_offset)
            sys.stdout.write("".join(out))
    if ret < 0 or res.check_errors:
        error_report("Check failed: %s" % os.strerror(-ret) if ret < 0 else "Check failed")
        return 1
    if res.corruptions:
        return 2
    return 3 if res.leaks else 0


# ---------------------------------------------------------------- snapshot


def snapshot_action(blk: BlockBackend, action: str, name: str, quiet: bool) -> int:
    """qemu-img snapshot -l/-c/-a/-d.  QEMU: img_snapshot."""
    from gqemu.block.qcow2_snapshot import (qcow2_snapshot_create, qcow2_snapshot_delete,
                                            qcow2_snapshot_goto)
    bs, s = _qcow2_state(blk)
    if action == "-l":
        if s is not None and s.snapshots and not s.has_data_file:
            sys.stdout.write("Snapshot list:\n" + snapshot_table(_snapshot_infos(s)))
        return 0
    verb = {"-c": "create", "-a": "apply", "-d": "delete"}[action]
    from gqemu.block.driver import BDRV_O_RDWR
    if s is None and action == "-a" and bs.drv.format_name == "raw" and bs.probed \
            and bs.open_flags & BDRV_O_RDWR:
        # bdrv_snapshot_goto falls back to the file child, closing and
        # reopening the raw node: raw_open warns once more
        from gqemu.block.raw_format import raw_probe_warning
        raw_probe_warning(bs)
    if s is None:           # a driver without snapshots (raw, qcow): img_snapshot's words
        why = {"-c": "-95 (Operation not supported)",
               "-a": "Block driver does not support snapshots",
               "-d": "snapshot not found"}[action]
        raise ImgError("Could not %s snapshot '%s': %s" % (verb, name, why))
    fn = {"-c": qcow2_snapshot_create, "-a": qcow2_snapshot_goto,
          "-d": qcow2_snapshot_delete}[action]
    args: tuple = (name,)
    if action == "-d":      # bdrv_snapshot_find: by name only, then that one's ID
        found = [sn for sn in s.snapshots if sn.name == name] if not s.has_data_file else []
        if not found:
            raise ImgError("Could not delete snapshot '%s': snapshot not found" % name)
        args = (name, found[0].id_str)
    ret, msg = run_co(fn, bs, *args)
    if ret < 0:
        if action == "-a":           # the driver's own error is reported first
            if msg and ret != -2:
                error_report(msg)
            msg = "Failed to load snapshot: %s" % os.strerror(-ret)
        elif action == "-d" and (ret == -2 or s.has_data_file):
            msg = "snapshot not found"      # (bdrv_snapshot_find lists: -ENOTSUP there)
        elif action == "-c":                # img_snapshot prints the errno itself
            msg = "%d (%s)" % (ret, os.strerror(-ret))
        raise ImgError("Could not %s snapshot '%s': %s" % (verb, name, msg or os.strerror(-ret)))
    return 0
