; atacmds.asm -- ATA commands other than plain READ/WRITE SECTORS on the
; primary master of QEMU 7.2's PIIX IDE, each followed by ataops.inc's dump
; (IRQ line before/after the status read, task file, alt status, status,
; BM status INTR, data sum): what SeaBIOS leaves, opcodes QEMU aborts,
; CHECK POWER MODE, SET FEATURES (write cache, transfer mode, bad
; subcommand), IDENTIFY after them, FLUSH CACHE (EXT), READ VERIFY EXT,
; READ NATIVE MAX (EXT), SEEK, RECALIBRATE, SET MULTIPLE MODE (0, 3, 32,
; 8) and READ/WRITE MULTIPLE (EXT), power commands, EXECUTE DEVICE
; DIAGNOSTIC, SMART, DSM, WRITE VERIFY, commands to the absent slave, and
; 32-bit data transfers (rep insd/outsd).
; tests/data/kvm/record.sh re-records it under real QEMU.
BITS 16
ORG 0x7C00
%include "ataops.inc"
ops:
  DUMP F_HOBR                           ; as SeaBIOS left it
  IO 0x3F6, 0x81, 0x00                  ; nIEN clear
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0x00      ; NOP
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xFF      ; no such opcode
  CMD 0, 0, 0x12, 0, 0, 0, 0xE0, 0x08   ; DEVICE RESET (ATAPI only)
  CMD 0, 0, 0x12, 0, 0, 0, 0xE0, 0xA1   ; IDENTIFY PACKET DEVICE
  CMD 0, 0, 0x12, 0, 0, 0, 0xE0, 0xE5   ; CHECK POWER MODE
  CMD 0, 0x02, 0, 0, 0, 0, 0xE0, 0xEF   ; SET FEATURES: write cache on
  CMD 0, 0x82, 0, 0, 0, 0, 0xE0, 0xEF   ; write cache off (flushes)
  CMD 0, 0x99, 0, 0, 0, 0, 0xE0, 0xEF   ; bad subcommand
  CMD 0, 0x03, 0x45, 0, 0, 0, 0xE0, 0xEF ; transfer mode UDMA5
  CMD 0, 0x03, 0x22, 0, 0, 0, 0xE0, 0xEF ; MWDMA2
  CMD 0, 0x03, 0x0C, 0, 0, 0, 0xE0, 0xEF ; PIO4
  CMD 0, 0x03, 0x30, 0, 0, 0, 0xE0, 0xEF ; mode 6: bad
  CMD 0, 0x66, 0, 0, 0, 0, 0xE0, 0xEF   ; no revert on reset
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xEC      ; IDENTIFY (words 62/63/85/88 in the sum)
  CMD 0, 0x02, 0, 0, 0, 0, 0xE0, 0xEF   ; write cache on
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xEC      ; IDENTIFY
  CMD 0, 0, 7, 1, 2, 3, 0xE0, 0xE7      ; FLUSH CACHE
  CMD48 F_HOBR, 0x11, 0, 0, 0, 0, 0x22, 0, 5, 6, 7, 0x40, 0xEA ; FLUSH CACHE EXT
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 5, 0x10, 0, 0, 0x40, 0x42 ; READ VERIFY EXT
  CMD48 F_HOBR, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x40, 0x42 ; count 0x100
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x40, 0x42 ; count 0 = 65536
  CMD 0, 0, 0, 0x10, 0, 0, 0xE0, 0x40   ; READ VERIFY count 0
  CMD 0, 0, 3, 0x10, 0, 0, 0xE0, 0x41   ; READ VERIFY without retry
  CMD48 F_HOBR, 0, 0, 9, 9, 9, 0, 0, 9, 9, 9, 0x40, 0x27 ; READ NATIVE MAX EXT
  CMD 0, 0, 0, 9, 9, 9, 0xEF, 0xF8      ; READ NATIVE MAX
  CMD 0, 0, 0, 9, 9, 9, 0xAF, 0xF8      ; ... in CHS mode
  CMD 0, 0, 4, 0x55, 0, 0, 0xE0, 0x70   ; SEEK
  CMD 0, 0, 4, 0x55, 0x66, 0x0F, 0xEF, 0x7F ; SEEK (low nibble ignored)
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0x10      ; RECALIBRATE
  CMD 0, 0, 0x1A, 0, 0, 0, 0xE0, 0x1F   ; RECALIBRATE variant
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xC6      ; SET MULTIPLE MODE 0
  CMD 0, 0, 2, 20, 0, 0, 0xE0, 0xC4     ; READ MULTIPLE, multiple mode off
  CMD F_OUT, 0, 2, 20, 0, 0, 0xE0, 0xC5 ; WRITE MULTIPLE, off
  CMD 0, 0, 3, 0, 0, 0, 0xE0, 0xC6      ; SET MULTIPLE MODE 3 (not 2^n)
  CMD 0, 0, 32, 0, 0, 0, 0xE0, 0xC6     ; 32 (> 16)
  CMD 0, 0, 2, 20, 0, 0, 0xE0, 0xC4     ; READ MULTIPLE: still off
  CMD 0, 0, 8, 0, 0, 0, 0xE0, 0xC6      ; SET MULTIPLE MODE 8
  CMD 0, 0, 10, 20, 0, 0, 0xE0, 0xC4    ; READ MULTIPLE 10 = 8 + 2
  CMD F_OUT, 0, 3, 0x2C, 1, 0, 0xE0, 0xC5 ; WRITE MULTIPLE 3 at 300
  CMD 0, 0, 3, 0x2C, 1, 0, 0xE0, 0x20   ; READ them back
  CMD48 F_HOBR, 0, 0, 0, 0, 0, 0, 9, 0x40, 0, 0, 0x40, 0x29 ; READ MULTIPLE EXT 9
  CMD48 F_HOBR|F_OUT, 0, 0, 0, 0, 0, 0, 2, 0x30, 1, 0, 0x40, 0x39 ; WRITE MULTIPLE EXT
  CMD 0, 0, 16, 0, 0, 0, 0xE0, 0xC6     ; back to 16
  CMD F_D32, 0, 20, 0x60, 0, 0, 0xE0, 0xC4 ; READ MULTIPLE 20 = 16 + 4, rep insd
  CMD F_D32|F_OUT, 0, 2, 0x50, 1, 0, 0xE0, 0x30 ; WRITE SECTORS by rep outsd
  CMD F_D32, 0, 2, 0x50, 1, 0, 0xE0, 0x20 ; read them back by dwords
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xE1      ; IDLE IMMEDIATE
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xE0      ; STANDBY IMMEDIATE
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xE3      ; IDLE
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0x98      ; CHECK POWER MODE (old)
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xE6      ; SLEEP
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xEC      ; IDENTIFY after SLEEP
  CMD 0, 0x44, 0x33, 0x22, 0x11, 0, 0xE5, 0x90 ; EXECUTE DEVICE DIAGNOSTIC
  CMD 0, 0xD0, 1, 0, 0, 0, 0xE0, 0xB0   ; SMART without the key
  CMD 0, 0xD8, 1, 0, 0x4F, 0xC2, 0xE0, 0xB0 ; SMART ENABLE
  CMD 0, 0xDA, 1, 0, 0x4F, 0xC2, 0xE0, 0xB0 ; SMART RETURN STATUS
  CMD 0, 0xEE, 1, 0, 0x4F, 0xC2, 0xE0, 0xB0 ; SMART bad subcommand
  CMD 0, 0x00, 1, 0, 0, 0, 0xE0, 0x06   ; DSM without TRIM
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xF5      ; SECURITY FREEZE LOCK
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xCF      ; CFA WEAR LEVEL (0xCF)
  CMD F_OUT, 0, 1, 0x40, 1, 0, 0xE0, 0x3C ; WRITE VERIFY 1 at 320
  CMD 0, 0, 1, 0x40, 1, 0, 0xE0, 0x21   ; READ SECTORS without retry
  CMD 0, 0, 0, 0, 0, 0, 0xF0, 0xEC      ; IDENTIFY to the absent slave
  CMD 0, 0, 0, 0, 0, 0, 0xF0, 0xE7      ; FLUSH CACHE to the absent slave
  CMD 0, 0, 0, 0, 0, 0, 0xF0, 0xFF      ; bad opcode to the absent slave
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0x91      ; INITIALIZE DEVICE PARAMETERS 0 sectors
  CMD 0, 0, 63, 0, 0, 0, 0xEF, 0x91     ; 16 heads, 63 sectors again
  CMD 0, 0, 1, 1, 0, 0, 0xA0, 0x20      ; CHS 0/0/1
  db OP_END
ops_end:
  align 512, db 0
