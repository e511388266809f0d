; atairq.asm -- the IDE register file between and around commands on QEMU
; 7.2's PIIX IDE: nIEN and the IRQ 14 line as the PIC's IRR shows it
; (alternate status leaves it, status lowers it, a command write lowers it
; even when the command is ignored), register and command writes while DRQ
; is set, byte/word/dword accesses to the data and task-file ports with and
; without DRQ, a partial PIO read or write and then a new command, SRST in
; the middle of a transfer and with the (absent) slave selected, the
; secondary channel with no drives (IRQ 15, BM status), 0x377.
; Uses ataops.inc; tests/data/kvm/record.sh re-records it under real QEMU.
BITS 16
ORG 0x7C00
%include "ataops.inc"

%define IRR IO 0xA0, 0x81, 0x0A
%macro IRRIN 0
  IRR
  IO 0xA0, 1, 0
%endmacro

ops:
  ; nIEN set: a completed command does not raise the line nor BM INTR
  IO 0x3F6, 0x81, 0x02
  CMD 0, 0, 1, 1, 0, 0, 0xE0, 0x20
  IO 0x3F6, 0x81, 0x00                  ; clearing nIEN raises nothing
  IRRIN
  ; IRQ raised, then nIEN set: the line stays up
  CMD F_PART, 0, 0, 0, 0, 0, 0xE0, 0xEC ; IDENTIFY, 8 words of 256
  IO 0x3F6, 1, 0                        ; alt status: DRQ
  IRRIN
  IO 0x3F6, 0x81, 0x02
  IRRIN
  IO 0x3F6, 0x81, 0x00
  ; writes while DRQ: dropped; a command write is ignored but lowers the IRQ
  IO 0x1F2, 0x81, 0x77
  IO 0x1F6, 0x81, 0xF0
  IO 0x1F2, 1, 0
  IO 0x1F6, 1, 0
  IO 0x1F7, 0x81, 0x20
  IRRIN
  IO 0x3F6, 1, 0
  ; the data port at other widths, and the task file at 16/32 bits
  IO 0x1F0, 1, 0                        ; byte: a word consumed, its low byte
  IO 0x1F0, 4, 0                        ; dword
  IO 0x1F0, 2, 0
  IO 0x1F1, 2, 0                        ; error + count
  IO 0x1F2, 4, 0                        ; 32-bit task-file read
  IO 0x1F6, 4, 0                        ; device, status, then past the block
  IO 0x1F6, 2, 0                        ; device + status
  IO 0x1F0, 0x81, 0x1234                ; byte write to the data port
  IO 0x3F6, 2, 0                        ; alt status, high byte all ones
  IO 0x3F6, 4, 0
  IO 0x377, 1, 0
  DUMP F_XFER                           ; the rest of IDENTIFY, 256 words asked
  IO 0x1F0, 2, 0                        ; DRQ clear: 0
  IO 0x1F0, 4, 0
  IO 0x1F0, 1, 0
  ; a partial READ then a new command (ignored), then the rest (one
  ; sector: a rep insw running past the end of a DRQ block would race
  ; the next block's read under QEMU)
  CMD F_PART, 0, 1, 5, 0, 0, 0xE0, 0x20
  IO 0x1F7, 0x81, 0x20
  IO 0x3F6, 1, 0
  DUMP F_XFER
  ; a partial WRITE then a command: ignored; SRST drops the half-written sector
  CMD F_PART|F_OUT, 0, 1, 0x90, 1, 0, 0xE0, 0x30
  IO 0x1F0, 0x84, 0x5A5A
  IO 0x1F7, 0x81, 0x20
  IO 0x3F6, 1, 0
  IO 0x3F6, 0x81, 0x04
  IO 0x3F6, 0x81, 0x00
  DUMP F_HOBR
  IO 0x1F0, 2, 0                        ; after SRST: no data
  CMD 0, 0, 1, 0x90, 1, 0, 0xE0, 0x20   ; sector 400 unchanged
  ; a write finished with 16- and 32-bit accesses, then read back
  CMD F_PART|F_OUT, 0, 1, 0x91, 1, 0, 0xE0, 0x30
  IO 0x1F0, 0x82, 0xBEEF
  IO 0x1F0, 0x84, 0xCAFE
  DUMP F_XFER|F_OUT
  CMD 0, 0, 1, 0x91, 1, 0, 0xE0, 0x20
  ; SRST in the middle of a READ MULTIPLE block
  CMD F_PART, 0, 4, 0x20, 0, 0, 0xE0, 0xC4
  IO 0x3F6, 0x81, 0x04
  IO 0x3F6, 0x81, 0x00
  DUMP F_HOBR
  CMD 0, 0, 4, 0x20, 0, 0, 0xE0, 0xC4   ; multiple mode back at 16 after SRST
  ; SRST with the absent slave selected: the unit stays selected
  IO 0x1F6, 0x81, 0xB0
  IO 0x3F6, 0x81, 0x04
  IO 0x3F6, 0x81, 0x00
  DUMP 0
  IO 0x1F6, 1, 0
  IO 0x1F1, 1, 0
  CMD 0, 0, 0, 0, 0, 0, 0xE0, 0xEC      ; master again
  ; status vs alternate status on a pending IRQ
  CMD F_PART, 0, 1, 3, 0, 0, 0xE0, 0x20
  IO 0x3F6, 1, 0
  IRRIN
  IO 0x1F7, 1, 0
  IRRIN
  DUMP F_XFER
  ; the secondary channel, no drives: commands abort into the void
  IO 0x376, 0x81, 0x00
  IO 0x176, 0x81, 0xA0
  IO 0x172, 0x81, 0x55
  IO 0x172, 1, 0
  IO 0x177, 0x81, 0xEC
  IRRIN
  IO 0xC00A, 1, 0
  IO 0x177, 1, 0
  IO 0x171, 1, 0
  IO 0x176, 1, 0
  IO 0x376, 1, 0
  IRRIN
  IO 0x176, 0x81, 0xB0
  IO 0x177, 0x81, 0x20
  IRRIN
  IO 0xC00A, 1, 0
  IO 0x170, 2, 0
  IO 0x376, 0x81, 0x04
  IO 0x376, 0x81, 0x00
  IO 0x177, 1, 0
  IO 0xC00A, 1, 0
  db OP_END
ops_end:
  align 512, db 0
