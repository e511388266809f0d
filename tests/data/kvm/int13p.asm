; int13p.asm -- int13x.asm with a partition table that ends on head 254:
; QEMU takes it for a BIOS translation (LARGE or LBA by size) and SeaBIOS
; translates the geometry accordingly.
%define PART_HEADS 255
%define PART_SPT 63
%include "int13x.asm"
