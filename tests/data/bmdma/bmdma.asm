; bmdma.asm -- boot program that drives the PIIX IDE bus master (BMDMA) of
; the primary channel through QEMU 7.2's edge cases, for recording a
; reference trace (tests/data/bmdma/record.py re-records it).
;
; Build:  nasm -f bin -o bmdma.bin bmdma.asm      (4 sectors, LBA 0..3)
;
; Flow:
;   * load sectors 1..3 of the boot disk to 0:7E00 with INT 13h (SeaBIOS
;     does this by PIO, so it is in the trace like its own boot read);
;   * PCI config (0xCF8/0xCFC) of piix3-ide 00:01.1: BAR4 = 0xC001 (I/O at
;     0xC000, where SeaBIOS puts it), command = I/O + bus master (0x0005);
;   * device control 0x00 (IRQ on; the CPU runs with IF=0 so the IRQ only
;     shows as BM status bit 2), select master/LBA, wait until not busy;
;   * for every case of the table:
;       - BM command 0x00 (stop), BM status 0x06 (clear INT and ERR),
;         PRD table address -> BAR4+4 (32-bit write);
;       - START_FIRST: BM command 0x09 (read) / 0x01 (write) now, and
;         with REPROG the PRD address is rewritten while the engine runs;
;       - the task file (LBA48: every register twice, high byte first;
;         NOCOUNT leaves the count register alone; device 0xE0, 0x40
;         for LBA48, 0xA0 for CHS) and the command;
;       - otherwise, unless NODMA, BM command 0x09 / 0x01 now;
;       - poll 0x1F7 until BSY and DRQ are clear;
;       - to debugcon (0xE9): the case number, the BM status, 0x1F1..0x1F5
;         and 0x1F7 (8 bytes), then the 1024 bytes of the case's buffer at
;         0x10000 + (case & 15) * 0x1000 + (case >> 4) * 0x400;
;   * BM command 0x00, then isa-debug-exit (port 0xF4) with 0x10 (QEMU
;     exits with status 33); cli; hlt.
;
; WRITE DMA cases take their data from this program's image at 0x7C00.
BITS 16
ORG 0x7C00

BM      equ 0xC000
DBGC    equ 0xE9
EXITP   equ 0xF4
NLOAD   equ 3
idx     equ 0x0500          ; the case number (outside the image: the WRITE
                            ; cases send the image to the disk)

F_START equ 0x01            ; start the engine before writing the command
F_LBA48 equ 0x02
F_REPRG equ 0x04            ; rewrite the PRD address after the start
F_NOCNT equ 0x08            ; leave the count register as it is
F_WRITE equ 0x10            ; the engine reads memory (BM command 0x01)
F_CHS   equ 0x20            ; device register 0xA0: CHS addressing
F_NODMA equ 0x40            ; not a DMA command: leave the engine alone

start:
        cli
        xor     ax, ax
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     sp, 0x7C00
        cld
        jmp     0:.cs0
.cs0:
        sti
        mov     ax, 0x0200 + NLOAD  ; read NLOAD sectors
        mov     cx, 0x0002          ; cylinder 0, sector 2
        xor     dh, dh              ; head 0, DL = boot drive
        mov     bx, 0x7E00
        int     0x13
        cli
        jc      fail

        mov     dx, 0xCF8
        mov     eax, 0x80000920     ; 00:01.1 BAR4
        out     dx, eax
        mov     dx, 0xCFC
        mov     eax, 0x0000C001
        out     dx, eax
        mov     dx, 0xCF8
        mov     eax, 0x80000904     ; 00:01.1 command
        out     dx, eax
        mov     dx, 0xCFC
        mov     ax, 0x0005
        out     dx, ax

        mov     dx, 0x3F6
        xor     al, al
        out     dx, al
        mov     dx, 0x1F6
        mov     al, 0xE0
        out     dx, al
        call    wait_idle

        mov     si, cases
        mov     byte [idx], 0
next:
        cmp     byte [si], 0xFF
        je      done
        mov     dx, BM
        xor     al, al
        out     dx, al
        mov     dx, BM + 2
        mov     al, 0x06
        out     dx, al
        movzx   eax, word [si + 6]
        mov     dx, BM + 4
        out     dx, eax
        test    byte [si], F_START
        jz      .tf
        call    bm_start
        test    byte [si], F_REPRG
        jz      .tf
        movzx   eax, word [si + 8]
        mov     dx, BM + 4
        out     dx, eax
.tf:
        mov     dx, 0x1F1
        xor     al, al
        out     dx, al
        inc     dx                  ; 0x1F2
        test    byte [si], F_NOCNT
        jnz     .nocnt
        call    hob0
        mov     al, [si + 2]
        out     dx, al
.nocnt:
        inc     dx                  ; 0x1F3
        call    hob0
        mov     al, [si + 3]
        out     dx, al
        inc     dx                  ; 0x1F4
        call    hob0
        mov     al, [si + 4]
        out     dx, al
        inc     dx                  ; 0x1F5
        call    hob0
        xor     al, al
        out     dx, al
        inc     dx                  ; 0x1F6
        mov     al, 0xE0
        test    byte [si], F_LBA48
        jz      .dev
        mov     al, 0x40
.dev:   test    byte [si], F_CHS
        jz      .dev2
        mov     al, 0xA0
.dev2:  out     dx, al
        inc     dx                  ; 0x1F7
        mov     al, [si + 1]
        out     dx, al
        test    byte [si], F_START | F_NODMA
        jnz     .wait
        call    bm_start
.wait:
        call    wait_idle
        ; report
        mov     dx, DBGC
        mov     al, [idx]
        out     dx, al
        mov     dx, BM + 2
        in      al, dx
        mov     dx, DBGC
        out     dx, al
        mov     bx, 0x1F1
.regs:  mov     dx, bx
        in      al, dx
        mov     dx, DBGC
        out     dx, al
        inc     bx
        cmp     bx, 0x1F6
        jb      .regs
        mov     dx, 0x1F7
        in      al, dx
        mov     dx, DBGC
        out     dx, al
        push    si
        push    ds
        mov     ax, 0x1000
        mov     ds, ax
        mov     al, [cs:idx]        ; (case & 15) * 0x1000 + (case >> 4) * 0x400
        mov     ah, al
        shl     ah, 4
        shr     al, 4
        shl     al, 2
        or      ah, al
        xor     al, al
        mov     si, ax
        mov     cx, 1024
        rep     outsb
        pop     ds
        pop     si
        add     si, 10
        inc     byte [idx]
        jmp     next

done:
        mov     dx, BM
        xor     al, al
        out     dx, al
        mov     al, 0x10
        jmp     quit
fail:
        mov     al, 0x11
quit:
        out     EXITP, al
        cli
.h:     hlt
        jmp     .h

; high bytes of an LBA48 register pair (0) when the case is LBA48
hob0:
        test    byte [si], F_LBA48
        jz      .r
        xor     al, al
        out     dx, al
.r:     ret

bm_start:
        mov     al, 0x09
        test    byte [si], F_WRITE
        jz      .w
        mov     al, 0x01
.w:     push    dx
        mov     dx, BM
        out     dx, al
        pop     dx
        ret

wait_idle:
        push    dx
        mov     dx, 0x1F7
.p:     in      al, dx
        test    al, 0x88
        jnz     .p
        pop     dx
        ret

        times   510 - ($ - $$) db 0
        dw      0xAA55

; ---- sector 1..3: the case table and the PRD tables -----------------------
; case: flags, command, count, lba0, lba1, 0, PRD table, PRD rewrite address
%macro CASE 7
        db      %1, %2, %3, %4, %5, 0
        dw      %6, %7
%endmacro
EOT     equ     0x80000000
%define BUF(n) (0x10000 + (n) * 0x1000)

cases:
        ; 0/1: PRD longer than the transfer: engine stays active (0x05)
        CASE    0,              0xC8, 1, 0x10, 0, p_long0, 0
        CASE    F_START,        0xC8, 1, 0x11, 0, p_long1, 0
        ; 2/3: PRD shorter: status 0x50, no IRQ, inactive (0x00)
        CASE    0,              0xC8, 2, 0x12, 0, p_short2, 0
        CASE    F_START,        0xC8, 2, 0x14, 0, p_short3, 0
        ; 4/5: size 0 = 64 KiB (0x05)
        CASE    0,              0xC8, 1, 0x16, 0, p_64k4, 0
        CASE    F_START,        0xC8, 1, 0x17, 0, p_64k5, 0
        ; 6/7: odd size 513 -> 512 (0x04)
        CASE    0,              0xC8, 1, 0x18, 0, p_odd6, 0
        CASE    F_START,        0xC8, 1, 0x19, 0, p_odd7, 0
        ; 8/9: two entries 256 + 256 (0x04)
        CASE    0,              0xC8, 1, 0x1A, 0, p_two8, 0
        CASE    F_START,        0xC8, 1, 0x1B, 0, p_two9, 0
        ; 10/11: READ DMA EXT exact (0x04) and long (0x05)
        CASE    F_LBA48,        0x25, 2, 0x45, 0x03, p_ext10, 0
        CASE    F_LBA48|F_START, 0x25, 1, 0x47, 0x03, p_ext11, 0
        ; 12: WRITE DMA EXT 2 sectors from 0x7C00 (0x04)
        CASE    F_LBA48|F_WRITE, 0x35, 2, 0x00, 0x04, p_w12, 0
        ; 13: WRITE DMA 1 sector, 64 KiB PRD, start first (0x05)
        CASE    F_WRITE|F_START, 0xCA, 1, 0x02, 0x04, p_w13, 0
        ; 14: start, then move the PRD table up: nothing is walked (0x00)
        CASE    F_START|F_REPRG, 0xC8, 1, 0x20, 0, p_re14, p_re14 + 0x100
        ; 15: start, then move it 8 bytes down: the walk goes on at the
        ;     table the start latched (0x04)
        CASE    F_START|F_REPRG, 0xC8, 1, 0x21, 0, p_re15, p_re15 - 8
        ; 16: READ DMA count 0 (256 sectors), one-sector PRD: short (0x00),
        ;     the count stays 256 ...
        CASE    0,              0xC8, 0, 0x22, 0, p_cnt16, 0
        ; 17: ... then READ DMA EXT without writing the count: QEMU takes
        ;     the 256 left in nsector, not its low byte (short again: 0x00)
        CASE    F_LBA48|F_NOCNT, 0x25, 0, 0x30, 0, p_cnt17, 0
        ; 18: INITIALIZE DEVICE PARAMETERS with that count: 1 head of 256
        ;     sectors (QEMU keeps nsector, not its low byte)
        CASE    F_NOCNT|F_NODMA, 0x91, 0, 0x30, 0, p_end20, 0
        ; 19: READ DMA by CHS, cylinder 1 sector 5: LBA 1 * 256 + 4 = 260
        CASE    F_CHS,          0xC8, 1, 0x05, 0x01, p_chs19, 0
        ; 20: a plain READ DMA to end on (0x04)
        CASE    0,              0xC8, 1, 0x31, 0, p_end20, 0
        db      0xFF

        align   8
p_long0:  dd BUF(0), 1024 | EOT
p_long1:  dd BUF(1), 4096 | EOT
p_short2: dd BUF(2), 512 | EOT
p_short3: dd BUF(3), 256 | EOT
p_64k4:   dd BUF(4), 0 | EOT
p_64k5:   dd BUF(5), 0 | EOT
p_odd6:   dd BUF(6), 513 | EOT
p_odd7:   dd BUF(7), 513 | EOT
p_two8:   dd BUF(8), 256
          dd BUF(8) + 0x800, 256 | EOT
p_two9:   dd BUF(9), 256
          dd BUF(9) + 0x800, 256 | EOT
p_ext10:  dd BUF(10), 1024 | EOT
p_ext11:  dd BUF(11), 2048 | EOT
p_w12:    dd 0x7C00, 512
          dd 0x7E00, 512 | EOT
p_w13:    dd 0x7C00, 0 | EOT
p_re14:   dd BUF(14), 512 | EOT
p_re15:   dd BUF(15), 512 | EOT
p_cnt16:  dd BUF(0) + 0x400, 512 | EOT
p_cnt17:  dd BUF(1) + 0x400, 512 | EOT
p_chs19:  dd BUF(3) + 0x400, 512 | EOT
p_end20:  dd BUF(4) + 0x400, 512 | EOT

        times   2048 - ($ - $$) db 0
