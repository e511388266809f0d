; int13q.asm -- int13x.asm with a partition table of 8 heads x 32 sectors:
; QEMU uses it as the disk's geometry (no translation).
%define PART_HEADS 8
%define PART_SPT 32
%include "int13x.asm"
