; atadma.asm -- PIIX bus-master DMA on QEMU 7.2's primary channel beyond
; tests/data/bmdma's cases: scatter lists of several PRDs, a PRD crossing a
; 64 KiB boundary, READ/WRITE DMA straddling and beyond the end of the disk
; (BM and ATA status, what reached RAM and the disk), DMA write then PIO
; read back, nIEN during DMA (BM INTR), the BM direction bit against the
; command, the PRD pointer written and read at byte/word/dword widths, BM
; command/status read-back after writes of all ones, and the secondary
; channel's BM registers. Uses ataops.inc (PRD tables after the operations);
; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
%include "ataops.inc"
BM      equ 0xC000

; DMA: stop, clear status, table pointer, then the command, then START
%macro DMA 8   ; prd, count, lba0, lba1, lba2, dev, command, BM start value
  IO BM, 0x81, 0
  IO BM + 2, 0x81, 0x06
  IO32 BM + 4, %1
  IO 0x1F2, 0x81, %2
  IO 0x1F3, 0x81, %3
  IO 0x1F4, 0x81, %4
  IO 0x1F5, 0x81, %5
  IO 0x1F6, 0x81, %6
  IO 0x1F7, 0x81, %7
  IO BM, 0x81, %8
  DUMP F_WDRQ
  IO BM, 0x81, 0
%endmacro

ops:
  IO32 0xCF8, 0x80000904                ; piix3-ide 00:01.1 command:
  IO 0xCFC, 0x82, 0x0005                ; I/O + bus master
  IO 0x3F6, 0x81, 0x00
  FILL 0x1FF0, 0, 0x2000, 0xE5E5        ; 0x1FF00..0x23EFF
  ; 8 sectors through 8 PRDs of 512 bytes
  DMA prd8, 8, 0x40, 0, 0, 0xE0, 0xC8, 0x09
  SUM 0x2000, 0, 2048
  SUM 0x2000, 4096, 8
  ; 4 sectors, one PRD from 0x1FF00 across 0x20000
  DMA prdx, 4, 0x80, 0, 0, 0xE0, 0xC8, 0x09
  SUM 0x1FF0, 0, 1024
  SUM 0x1FF0, 2048, 8
  ; READ DMA straddling the end, and beyond it
  FILL 0x2000, 0, 512, 0xE5E5
  DMA prd2, 2, 0xFF, 0x7F, 0, 0xE0, 0xC8, 0x09
  SUM 0x2000, 0, 512
  DMA prd2, 1, 0x00, 0x80, 0, 0xE0, 0xC8, 0x09
  DMA prd2, 2, 0xFF, 0x7F, 0, 0x40, 0x25, 0x09 ; READ DMA EXT straddling
  ; WRITE DMA (from the program image), then PIO read back
  DMA prdw, 2, 0x00, 0x05, 0, 0xE0, 0xCA, 0x01
  CMD 0, 0, 2, 0x00, 0x05, 0, 0xE0, 0x20
  ; WRITE DMA straddling the end: what reaches the last sector
  DMA prdw, 2, 0xFF, 0x7F, 0, 0xE0, 0xCA, 0x01
  CMD 0, 0, 1, 0xFF, 0x7F, 0, 0xE0, 0x20
  DMA prdw, 2, 0xFF, 0x7F, 0, 0x40, 0x35, 0x01 ; WRITE DMA EXT straddling
  ; the BM direction bit disagreeing with the command
  FILL 0x2000, 0, 512, 0xE5E5
  DMA prd2, 2, 0x10, 0, 0, 0xE0, 0xC8, 0x01
  SUM 0x2000, 0, 512
  DMA prdw, 1, 0x10, 0x05, 0, 0xE0, 0xCA, 0x09
  CMD 0, 0, 1, 0x10, 0x05, 0, 0xE0, 0x20
  ; nIEN during DMA: no IRQ, no BM INTR
  IO 0x3F6, 0x81, 0x02
  DMA prd2, 2, 0x20, 0, 0, 0xE0, 0xC8, 0x09
  IO 0x3F6, 0x81, 0x00
  ; the PRD pointer at every width (bits 0-1 read 0)
  IO BM + 4, 0x82, 0x1237
  IO BM + 6, 0x82, 0x0004
  IO BM + 4, 4, 0
  IO BM + 5, 0x81, 0xAB
  IO BM + 4, 4, 0
  IO BM + 6, 1, 0
  IO BM + 5, 2, 0
  IO BM + 7, 1, 0
  IO32 BM + 4, 0xFFFFFFFF
  IO BM + 4, 4, 0
  ; BM command/status: all ones written, then read at 8/16/32 bits
  IO BM, 0x81, 0xFE
  IO BM, 1, 0
  IO BM + 2, 0x81, 0xFF
  IO BM + 2, 1, 0
  IO BM + 2, 0x81, 0x00
  IO BM + 2, 1, 0
  IO BM, 2, 0
  IO BM, 4, 0
  IO BM + 1, 1, 0
  IO BM + 3, 1, 0
  IO BM, 0x81, 0
  ; the secondary channel's BM registers
  IO BM + 8, 1, 0
  IO BM + 10, 1, 0
  IO BM + 10, 0x81, 0x60
  IO BM + 10, 1, 0
  IO32 BM + 12, 0x00012345
  IO BM + 12, 4, 0
  IO BM + 8, 0x81, 0x09                 ; START with no drive, no command
  IO BM + 10, 1, 0
  IO BM + 8, 0x81, 0x00
  IO BM + 10, 1, 0
  ; DMA command with START never set: DRQ until SRST
  IO BM + 2, 0x81, 0x06
  IO32 BM + 4, prd2
  IO 0x1F2, 0x81, 1
  IO 0x1F6, 0x81, 0xE0
  IO 0x1F7, 0x81, 0xC8
  IO 0x3F6, 1, 0
  IO BM + 2, 1, 0
  IO 0x3F6, 0x81, 0x04
  IO 0x3F6, 0x81, 0x00
  DUMP F_WDRQ
  CMD 0, 0, 1, 0x00, 0, 0, 0xE0, 0x20   ; PIO works after it
  db OP_END
  align 8, db 0
prd8:
%assign i 0
%rep 8
  dd 0x20000 + i * 512
  dw 512, (i / 7) * 0x8000
%assign i i + 1
%endrep
prdx:
  dd 0x1FF00
  dw 2048, 0x8000
prd2:
  dd 0x20000
  dw 1024, 0x8000
prdw:
  dd 0x7C00
  dw 1024, 0x8000
ops_end:
  align 512, db 0
