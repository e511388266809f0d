"""The qemu-img sessions tests/cli/test_qemu_img_random2.py found differing
between real qemu-img 7.2 and gqemu-img, each with what QEMU does: a name,
the setup (argv of the real tools) and the qemu-img commands.  Each failed
before its fix; test_found_session2 runs them all.
"""
from __future__ import annotations

_QCOW2_1M = [["qemu-img", "create", "-q", "-f", "qcow2", "test.img", "1M"]]
FOUND2: dict[str, tuple[list[list[str]], list[list[str]]]] = {
    # the command's getopt loop acts on each option in order: -h shows the
    # help only when no bad option comes first, a bad -r value is reported
    # before a later unknown option; info and check take --format
    "getopt_in_order": (_QCOW2_1M, [["info", "-x", "-h", "test.img"],
                                    ["check", "-r", "bogus", "test.img", "-x"],
                                    ["info", "--format", "qcow2", "test.img"],
                                    ["check", "--format=qcow2", "test.img"],
                                    ["resize", "-h"], ["help"]]),
    # qemu-img's own options before the command: getopt_long("+:hVT:")
    # with --help, --version, --trace (prefixes too), "--", -T's warning
    "global_options": (_QCOW2_1M, [["--he"], ["-T", "nosuch", "info", "test.img"],
                                   ["--vers"], ["-q", "info", "test.img"],
                                   ["--", "info", "test.img"], ["-T"], ["--"]]),
    # --image-opts: a first item without '=' is the implied "file" option,
    # a node reference qemu-img cannot resolve; later ones are short-form
    # booleans with QemuOpts' warning
    "image_opts_implied_file": (_QCOW2_1M, [
        ["info", "--image-opts", "out.img"], ["info", "--image-opts", "driver=qcow2,file=x"],
        ["info", "--image-opts", "driver=bogus,file=x"],
        ["info", "--image-opts", "file.filename=test.img,file=x"],
        ["info", "--image-opts", "file.filename=test.img,foo"],
        ["convert", "--image-opts", "-n", "-O", "raw", "out.img", "test.img"]]),
    # rebase checks -F's format name right after opening the image
    "rebase_bad_backing_format": ([["qemu-img", "create", "-q", "-f", "raw", "test.img", "1M"]],
                                  [["rebase", "test.img", "-u", "-F", "bogus"],
                                   ["rebase", "-F", "bogus", "-b", "x.img", "test.img"]]),
    # qcow (version 1) images are created (header, backing name, zeroed L1
    # sectors; 512-byte clusters over a backing file), their options listed
    # and checked, the file left behind empty when the format layer fails;
    # a raw backing file is probed (qcow stores no format); commit empties
    # the image (qcow_make_empty cuts the file after the L1 table); a
    # compressed convert ends with qcow refusing the zero-length write:
    # exit 1, no message
    "qcow_create": (
        [["qemu-img", "create", "-q", "-f", "raw", "test.img", "1M"],
         ["qemu-io", "-f", "raw", "-c", "write -P 5 0 64k", "test.img"]],
        [["create", "-f", "qcow", "out.img", "1M"],
         ["create", "-f", "qcow", "-b", "test.img", "-F", "raw", "q7.img", "5M"],
         ["map", "q7.img"], ["create", "-f", "qcow", "-o", "preallocation=falloc,size=3000",
                             "q4.img"],
         ["create", "-f", "qcow", "-o", "encryption=on", "q2.img", "1M"],
         ["create", "-f", "qcow", "-o", "encrypt.format=luks", "q3.img", "1M"],
         ["create", "-f", "qcow", "-o", "nocow=on,extent_size_hint=1M", "q5.img", "1M"],
         ["create", "-f", "qcow", "q6.img", "0"], ["create", "-f", "qcow", "-o", "help"],
         ["convert", "-O", "qcow", "test.img", "q8.img"],
         ["convert", "-c", "-O", "qcow", "test.img", "q9.img"],
         ["commit", "q7.img"], ["check", "q7.img"]]),
    # img_create parses the size before it complains about a third operand;
    # snapshot's "Cannot mix" is error_exit's, with the --help hint
    "create_size_first": (_QCOW2_1M, [["create", "x", "-f", "qcow2", "out.img", "1M"],
                                      ["snapshot", "test.img", "-l", "-c", "s1"]]),
    # commit empties an extended-L2 overlay with make_completely_empty,
    # whose mark_clean writes the caches back and rewrites the whole header
    # cluster before the file is cut: the emptied file's disk size (the
    # filesystem's extent blocks) is QEMU's, 260 KiB (was 256 KiB)
    "commit_empty_disk_size": (
        [["qemu-img", "create", "-q", "-f", "qcow2", "base.img", "1M"],
         ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536,"
          "extended_l2=on,lazy_refcounts=on,backing_file=base.img,backing_fmt=qcow2",
          "test.img", "1M"],
         ["qemu-io", "-c", "write -P 17 0 64k", "-c", "write -z 300k 3000", "-c",
          "write -P 3 700k 4k", "test.img"]],
        [["commit", "test.img"], ["info", "test.img"]]),
    # --object of another type than secret: QEMU's errors for a missing,
    # unknown or unbuilt type and a missing required property
    "object_types": (_QCOW2_1M, [["info", "--object", t, "test.img"] for t in (
        "bogus", "id=x", "iothread,id=x", "memory-backend-ram,id=m", "", ",",
        "authz-list,id=a")] + [["create", "--obj", "-f", "raw", "out.img"]]),
    # -U: snapshot opens read-write unless it lists (img_open's refusal);
    # rebase shares only the backing files it opens read-only
    "force_share_rw": (_QCOW2_1M + [["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                                     "test.img", "-F", "qcow2", "top.img", "1M"]],
                       [["snapshot", "test.img", "-U", "-U"], ["snapshot", "-U", "-l", "test.img"],
                        ["snapshot", "-U", "missing.img", "-a", "s1"],
                        ["rebase", "-U", "-b", "test.img", "-F", "qcow2", "top.img"],
                        ["rebase", "-p", "top.img", "--force", "-b", "missing.img"]]),
    # measure reports glibc's error when its getopt loop reaches it, after
    # the options before it (a bad --size first); commit -r is cvtnum's
    "errors_in_order": (_QCOW2_1M, [["measure", "test.img", "-f", "qcow2", "--size", "-1",
                                     "-O", "raw", "--image-opts=1"],
                                    ["commit", "test.img", "-r", "4 k"]]),
    # info and map want one file name before they look at --output
    "output_after_name": (_QCOW2_1M, [["map", "--output", "test.img"],
                                      ["info", "--output", "test.img"]]),
    # -o is parsed (names, then values, in order) before the size is
    # required; numbers are strtoull's, base 0; convert takes and drops size
    "create_opts_first": (_QCOW2_1M, [
        ["create", "-o", "cluster_size=4k", "out.img", "-f", "raw"],
        ["create", "-f", "qcow2", "-o", "lazy_refcounts=x,bogus=1", "o.img"],
        ["create", "-f", "qcow2", "-o", "refcount_bits=0x10", "o2.img", "1M"],
        ["create", "-f", "qcow2", "-o", "refcount_bits=010", "o3.img", "1M"],
        ["convert", "-O", "qcow2", "-o", "size=2M", "test.img", "o5.img"],
        ["convert", "-O", "qcow2", "-o", "size=x", "test.img", "o6.img"]]),
    # convert checks -o and the target's backing options before --bitmaps'
    # single source
    "convert_bitmaps_after_opts": (_QCOW2_1M, [
        ["convert", "--bitmaps", "test.img", "test.img", "-O", "qcow2", "-o", "bogus=1", "o.img"],
        ["convert", "--bitmaps", "-O", "qcow", "test.img", "test.img", "o.img", "-o", "compat=v3"],
        ["convert", "--bitmaps", "test.img", "test.img", "-O", "raw", "-c", "o.img"]]),
    # an empty file name: bdrv_open's error; --image-opts without driver or file
    "empty_file_name": (_QCOW2_1M, [["info", ""], ["check", ""], ["bitmap", "--add", "", "b0"],
                                    ["dd", "if=", "of=o.img"], ["info", "--image-opts", ""],
                                    ["snapshot", "-U", "-c", "s", ""]]),
    # an L1 entry past the end of the file: the L2 slice reads zero-filled
    # (QEMU), so the clusters read as unallocated instead of EIO
    "l2_past_eof_reads_zero": (
        [["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10,preallocation=falloc",
          "test.img", "2M"], ["qemu-io", "-f", "raw", "-c", "write -P 1 196608 2", "test.img"]],
        [["dd", "if=test.img", "of=out.img"], ["map", "test.img"]]),
    # convert -T is checked once the operands are, -t when the target is
    # opened (after it is created)
    "convert_cache_modes": (_QCOW2_1M, [
        ["convert", "-n", "-O", "vmdkx", "-T", "bogus", "test.img", "missing.img", "out.img"],
        ["convert", "-T", "bogus", "test.img"], ["convert", "-T", "none", "test.img", "o.img"],
        ["convert", "-t", "bogus2", "-O", "qcow2", "test.img", "o9.img"]]),
    # dd's bs is cvtnum_full(1, INT_MAX); rebase prints its last progress
    # after a failed backing change and checks -t/-T first; commit -p starts
    # the progress before looking for the backing file and checks -t first
    "bounds_progress_cache": (_QCOW2_1M + [["qemu-img", "create", "-q", "-f", "raw",
                                            "base.img", "512K"]], [
        ["dd", "bs=8E", "if=test.img", "of=o.img"], ["dd", "bs=-1", "if=test.img", "of=o.img"],
        ["rebase", "-p", "-b", "", "base.img"], ["rebase", "-p", "-u", "-b", "x.img", "test.img"],
        ["rebase", "-t", "bogus", "-u", "-b", "", "test.img"],
        ["rebase", "-p", "-T", "bogus", "-b", "", "test.img"],
        ["commit", "-p", "test.img"], ["commit", "-t", "bogus", "test.img"]]),
    # --object keys follow keyval's syntax; compare exits 2 on --object errors
    "object_keys_compare_status": (_QCOW2_1M, [
        ["map", "test.img", "--obj", "--output=json"],
        ["info", "--object", "secret,id=s0,data=x,1a=1", "test.img"],
        ["compare", "-U", "test.img", "--obj", "-T", "test.img"]]),
    # with -n the target format is known only once it is open: the source's
    # bitmap support, then the target's, then its compression
    "convert_n_checks": (_QCOW2_1M + [["qemu-img", "create", "-q", "-f", "raw", "r.img",
                                       "1M"]], [
        ["convert", "-n", "-c", "-f", "raw", "--bitmaps", "r.img", "r.img", "-O", "raw"],
        ["convert", "-n", "-c", "--bitmaps", "test.img", "r.img"]]),
    # -F for a raw image (add_old_style_options); convert -n onto its own
    # source: the target's lock error keeps its hint
    "raw_backing_format": (_QCOW2_1M, [["create", "-f", "raw", "out.img", "-F", "qcow2"],
                                       ["create", "-f", "raw", "o1.img", "-F", "qcow2", "1M"],
                                       ["convert", "-O", "raw", "-F", "qcow2", "test.img",
                                        "o2.img"],
                                       ["convert", "-n", "test.img", "test.img"]]),
    # rebase -U (--f is its unique prefix --force-share) opens the new backing
    # file sharing everything, so the image itself can be it; without -U the
    # lock error keeps its hint
    "rebase_force_share_backing": (_QCOW2_1M, [
        ["rebase", "-b", "test.img", "test.img"], ["rebase", "--f", "-b", "test.img",
                                                   "test.img"],
        ["rebase", "-U", "-b", "test.img", "-F", "qcow2", "test.img"]]),
    # convert -C copies data ranges with copy_range, zeroes included (no
    # zero detection); qcow has no copy_range and falls back
    "convert_copy_range": (
        [["qemu-img", "create", "-q", "-f", "raw", "test.img", "2M"],
         ["qemu-io", "-f", "raw", "-c", "write -P 0 0 128k", "-c", "write -P 3 1M 4k",
          "test.img"]],
        [["convert", "-f", "raw", "test.img", "out.img", "-O", "qcow2", "-C"],
         ["map", "--output=json", "out.img"], ["convert", "-C", "-O", "qcow", "test.img",
                                               "o2.img"]]),
    # rebase onto a file already in the backing chain reuses that node:
    # -F is not checked against it (found by test_qemu_img_random, seed 25)
    "rebase_new_backing_in_chain": (
        [["qemu-img", "create", "-q", "-f", "raw", "base.img", "524288"],
         ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "backing_file=base.img,"
          "backing_fmt=raw", "test.img", "1M"],
         ["qemu-io", "-f", "qcow2", "-c", "write -P 0 659456 3000", "test.img"]],
        [["rebase", "-f", "qcow2", "-b", "base.img", "-F", "qcow2", "test.img"],
         ["info", "test.img"]]),
    # dd: count shortens the input before the skip is checked, and a skip
    # past the end is reported once the (empty) output exists and is open
    "dd_skip_past_end": (_QCOW2_1M + [["qemu-img", "create", "-q", "-f", "raw", "r.img",
                                       "1M"]], [
        ["dd", "skip=2G", "if=test.img", "-O", "qcow", "of=test.img"],
        ["dd", "skip=2", "count=1", "bs=512", "if=r.img", "of=o2.img"],
        ["dd", "skip=2048", "bs=512", "if=r.img", "of=o4.img"]]),
}
