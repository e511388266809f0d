; atalba.asm -- addressing on QEMU 7.2's IDE disk (16 MiB = 0x8000 sectors,
; CHS 32/16/63): sector count 0 (256, 65536 for EXT), LBA48 high-order
; bytes, LBA28 bits 24-27 in the device register, reads and writes that
; straddle or start beyond the end (PIO and MULTIPLE), CHS addressing
; across track and head boundaries, CHS sector 0 and beyond the disk,
; INITIALIZE DEVICE PARAMETERS and whether SRST (after SET FEATURES
; 0x66/0xCC) keeps it, IDENTIFY after it, READ VERIFY and SEEK beyond the
; end. (Not here: a CHS transfer after INITIALIZE DEVICE PARAMETERS with
; count 0 -- QEMU 7.2 divides by the 0 sectors a track and dies of SIGFPE.)
; Uses ataops.inc; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
%include "ataops.inc"
ops:
  IO 0x3F6, 0x81, 0x00
  CMD 0, 0, 0, 0xFC, 0x7F, 0, 0xE0, 0x20   ; count 0 at 0x7FFC: 4 then ABRT
  CMD 0, 0, 0, 0xF0, 0x7F, 0, 0xE0, 0x20   ; count 0 = 256 at 0x7FF0: 16, ABRT
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 0, 0xF0, 0x7F, 0, 0x40, 0x24 ; 65536 at 0x7FF0
  CMD48 F_HOBR, 0, 1, 0, 0, 0, 0, 0, 0xF8, 0x7F, 0, 0x40, 0x24 ; 0x100 at 0x7FF8
  CMD48 F_HOBR, 0, 0, 1, 0, 0, 0, 1, 0x05, 0, 0, 0x40, 0x24    ; LBA 0x0100000005
  CMD48 F_HOBR, 0, 0, 0, 0, 1, 0, 1, 0x05, 0, 0, 0x40, 0x24    ; LBA 2^40 + 5
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 2, 0xFE, 0x7F, 0, 0x40, 0x24 ; last two sectors
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 1, 0x00, 0x80, 0, 0xE0, 0x24 ; LBA 0x8000
  CMD48 F_HOBR|F_OUT, 0, 0, 0, 1, 0, 0, 1, 0, 5, 0, 0x40, 0x34 ; WRITE EXT beyond
  CMD48 F_HOBR|F_OUT, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x7F, 0, 0x40, 0x34 ; WRITE EXT
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x7F, 0, 0x40, 0x24 ; read it back
  CMD 0, 0, 1, 0x05, 0, 0, 0xE1, 0x20      ; LBA28 0x01000005 (device bit 0)
  CMD 0, 0, 1, 0xFF, 0x7F, 0, 0xF0, 0x20   ; slave bit: ignored (no slave)
  CMD F_OUT, 0, 2, 0xFF, 0x7F, 0, 0xE0, 0x30 ; WRITE straddling: 1 then ABRT
  CMD 0, 0, 1, 0xFF, 0x7F, 0, 0xE0, 0x20   ; the last sector was written
  CMD F_OUT, 0, 4, 0xFE, 0x7F, 0, 0xE0, 0xC5 ; WRITE MULTIPLE straddling: ABRT
  CMD 0, 0, 4, 0xFC, 0x7F, 0, 0xE0, 0xC4   ; READ MULTIPLE: 4 fit
  CMD 0, 0, 4, 0xFE, 0x7F, 0, 0xE0, 0xC4   ; straddling: ABRT, no data
  CMD 0, 0, 1, 0x01, 0, 0, 0xA0, 0x20      ; CHS 0/0/1 = LBA 0
  CMD 0, 0, 3, 0x03, 0x01, 0, 0xA2, 0x20   ; CHS 1/2/3 x3
  CMD 0, 0, 3, 0x3E, 0x00, 0, 0xA0, 0x20   ; 0/0/62 x3: into head 1
  CMD 0, 0, 2, 0x3F, 0x00, 0, 0xAF, 0x20   ; 0/15/63 x2: into cylinder 1
  CMD 0, 0, 1, 0x00, 0x05, 0, 0xA0, 0x20   ; sector 0: LBA -1
  CMD 0, 0, 1, 0x01, 0x20, 0, 0xA0, 0x20   ; cylinder 32: beyond
  CMD 0, 0, 1, 0x3F, 0x1F, 0, 0xAF, 0x20   ; 31/15/63 = the last sector
  CMD 0, 0, 1, 0x40, 0x00, 0, 0xA0, 0x20   ; sector 64 (> 63)
  CMD 0, 0, 1, 0x01, 0xFF, 0xFF, 0xA0, 0x20 ; cylinder 65535
  CMD 0, 0, 17, 0, 0, 0, 0xA3, 0x91        ; INITIALIZE: 4 heads, 17 sectors
  CMD 0, 0, 2, 0x05, 0x02, 0, 0xA1, 0x20   ; CHS 2/1/5 under 4/17
  CMD 0, 0, 2, 0x11, 0x00, 0, 0xA3, 0x20   ; 0/3/17 x2: into cylinder 1
  CMD 0, 0, 0, 0, 0, 0, 0xA0, 0xEC         ; IDENTIFY after it
  CMD 0, 0, 0, 0, 0, 0, 0xA0, 0xF8         ; READ NATIVE MAX in CHS
  IO 0x3F6, 0x81, 0x04                     ; SRST
  IO 0x3F6, 0x81, 0x00
  DUMP 0
  CMD 0, 0, 1, 0x05, 0x02, 0, 0xA1, 0x20   ; CHS 2/1/5: still 4/17
  CMD 0, 0xCC, 0, 0, 0, 0, 0xE0, 0xEF      ; SET FEATURES: revert on reset
  IO 0x3F6, 0x81, 0x04
  IO 0x3F6, 0x81, 0x00
  DUMP 0
  CMD 0, 0, 1, 0x05, 0x02, 0, 0xA1, 0x20   ; CHS 2/1/5 under 16/63 again
  CMD 0, 0, 9, 0, 0, 0, 0xA7, 0x91         ; INITIALIZE: 8 heads, 9 sectors
  CMD 0, 0, 1, 0x02, 0x03, 0, 0xA1, 0x20   ; CHS 3/1/2
  CMD 0, 0, 63, 0, 0, 0, 0xAF, 0x91        ; back to 16/63
  CMD 0, 0, 5, 0x00, 0x90, 0, 0xE0, 0x40   ; READ VERIFY beyond the end
  CMD48 F_HOBR, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 0x40, 0x42 ; VERIFY EXT beyond
  CMD 0, 0, 5, 0x00, 0x90, 0, 0xE0, 0x70   ; SEEK beyond the end
  CMD 0, 0, 1, 0x00, 0x00, 0, 0xE0, 0x20   ; LBA 0 again
  db OP_END
ops_end:
  align 512, db 0
