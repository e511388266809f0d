; virtioblk.asm -- boot program that drives a legacy (0.9.5) virtio-blk PCI
; function the way a minimal driver does, for recording a reference under
; real QEMU 7.2 (tests/data/virtio/record.py re-records it).
;
; Build:  nasm -f bin -o virtioblk.bin virtioblk.asm     (NSECT sectors)
;
; Flow (everything the device answers goes to debugcon, port 0xE9, raw):
;   * if the signature at the end of the image is missing (SeaBIOS loaded
;     only sector 0), load the rest with INT 13h; under `gqemu run --boot`
;     the whole image is already there;
;   * scan bus 0 (dword reads of 0xCFC, one device per slot) for
;     1AF4:1001; print 'S' + the slot; dump its config dwords 0x00..0x4C,
;     then dwords 0x00..0x3C of 00:00.0, 00:01.0, 00:01.1 and 00:01.3;
;     a byte read of the interrupt line (0xCFC+0 at 0x3C) and a word read of
;     the device id (0xCFE);
;   * BAR0 & ~3 is the I/O base.  Command register: clear I/O enable
;     (word write), read the status register of BAR0 (all ones: unmapped),
;     restore the command, read it again;
;   * reset (status 0), ACKNOWLEDGE, DRIVER; dump the BAR bytes 0x00..0x7F
;     with byte reads (host features, registers, device config, beyond),
;     then the host features with a dword read;
;     guest features 0; queue select 0; queue size; zero 0x10000..0x1FFFF;
;     queue PFN 0x10 (desc 0x10000, avail 0x11000, used 0x12000); read the
;     PFN back; DRIVER_OK;
;   * run the request table: per request a 3-descriptor chain (header,
;     optional data, status byte), head 3*k, own header slot at
;     0x13000 + 32*k; notify unless DEFER; poll the used index (bounded:
;     0x10000000 pauses, 0x10000 for the requests expected not to complete);
;     print 'R', ISR (byte read: clears it), then for every new used
;     element its id, len and the request's status byte ('T' on timeout);
;     DUMP flags print the first 32 bytes of the data buffer;
;   * the last request has an 8-byte header: QEMU's virtio_error
;     ("outhdr too short") marks the device broken, nothing completes;
;   * reset the device (status 0), read status, PFN and ISR back;
;   * isa-debug-exit 0x10 (QEMU exits with 33).
BITS 16
ORG 0x7C00

NSECT   equ 4
DBGC    equ 0xE9
EXITP   equ 0xF4
RING    equ 0x1000      ; segment of the ring area (phys 0x10000)
nreq    equ 0x0500      ; requests submitted (= avail idx)
nused   equ 0x0502      ; used elements printed
iob     equ 0x0504      ; BAR0 I/O base
cfga    equ 0x0508      ; 0x80000000 | slot << 11
cmdsave equ 0x050C

F_WR    equ 0x02        ; the data buffer is device-writable (VRING_DESC_F_WRITE)
F_DEFER equ 0x04        ; queue only: no notify, no wait
F_DUMP  equ 0x08        ; print the first 32 bytes of the data buffer
F_SHORT equ 0x10        ; 8-byte header
F_NOCMP equ 0x20        ; expected not to complete: poll briefly

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
        cmp     dword [sig], 0x4B4C4256     ; 'VBLK'
        je      .loaded
        mov     ax, 0x0200 + NSECT - 1
        mov     bx, 0x7E00
        mov     cx, 0x0002
        mov     dh, 0
        mov     dl, 0x80
        int     0x13
        cli
        cmp     dword [sig], 0x4B4C4256
        je      .loaded
        mov     al, 'L'
        jmp     finish
.loaded:
        jmp     main

        times   510-($-$$) db 0
        dw      0xAA55

; ---- debugcon output
put8:   out     DBGC, al
        ret
put16:  call    put8
        mov     al, ah
        jmp     put8
put32:  push    eax
        call    put16
        shr     eax, 16
        call    put16
        pop     eax
        ret

; eax = config address -> eax = dword at it
cfgrd:  mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      eax, dx
        ret

; ebx = config address of a function, cx = bytes: dump dwords 0..cx-4
cfgdump:
        push    si
        xor     si, si
.d:     mov     eax, ebx
        or      ax, si
        call    cfgrd
        call    put32
        add     si, 4
        cmp     si, cx
        jb      .d
        pop     si
        ret

chipset: dw     0x0000, 0x0800, 0x0900, 0x0B00, 0xFFFF

; dx = iob + al
iop:    movzx   dx, al
        add     dx, [iob]
        ret

; di = descriptor offset (in RING), eax = addr, ecx = len, bx = flags;
; next = this index + 1; di += 16
putdesc:
        mov     [fs:di], eax
        mov     dword [fs:di+4], 0
        mov     [fs:di+8], ecx
        mov     [fs:di+12], bx
        mov     ax, di
        shr     ax, 4
        inc     ax
        mov     [fs:di+14], ax
        add     di, 16
        ret

main:
        mov     ax, RING
        mov     fs, ax
        ; ---- PCI scan of bus 0
        mov     ebx, 0x80000000
.scan:  mov     eax, ebx
        call    cfgrd
        cmp     eax, 0x10011AF4
        je      .found
        add     ebx, 0x800
        cmp     ebx, 0x80010000
        jb      .scan
        mov     al, 'N'
        jmp     finish
.found: mov     [cfga], ebx
        mov     al, 'S'
        call    put8
        mov     eax, ebx
        shr     eax, 11
        call    put8
        mov     cx, 0x50
        call    cfgdump
        ; the chipset functions 00:00.0, 00:01.0, 00:01.1, 00:01.3
        mov     si, chipset
.chip:  lodsw
        cmp     ax, 0xFFFF
        je      .chipd
        movzx   ebx, ax
        or      ebx, 0x80000000
        mov     cx, 0x40
        call    cfgdump
        jmp     .chip
.chipd: mov     ebx, [cfga]
        mov     eax, ebx
        or      al, 0x3C
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      al, dx
        call    put8
        mov     eax, ebx
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFE
        in      ax, dx
        call    put16
        ; BAR0
        mov     eax, ebx
        or      al, 0x10
        call    cfgrd
        and     ax, 0xFFFC
        mov     [iob], ax
        ; command: I/O off, probe, restore
        mov     eax, ebx
        or      al, 0x04
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      ax, dx
        mov     [cmdsave], ax
        call    put16
        mov     ax, [cmdsave]
        and     ax, 0xFFFE
        out     dx, ax
        mov     al, 0x12
        call    iop
        in      al, dx
        call    put8
        mov     dx, 0xCFC
        mov     ax, [cmdsave]
        out     dx, ax
        in      ax, dx
        call    put16
        ; ---- device init
        mov     al, 0x12
        call    iop
        mov     al, 0
        out     dx, al
        mov     al, 1
        out     dx, al
        mov     al, 3
        out     dx, al
        mov     cx, 0x80
        mov     dx, [iob]
.bard:  in      al, dx
        call    put8
        inc     dx
        loop    .bard
        mov     dx, [iob]
        in      eax, dx
        call    put32
        mov     al, 0x04
        call    iop
        xor     eax, eax
        out     dx, eax
        mov     al, 0x0E
        call    iop
        xor     ax, ax
        out     dx, ax
        mov     al, 0x0C
        call    iop
        in      ax, dx
        call    put16
        push    es
        mov     ax, RING
        mov     es, ax
        xor     di, di
        xor     ax, ax
        mov     cx, 0x8000
        rep     stosw
        pop     es
        mov     al, 0x08
        call    iop
        mov     eax, 0x10
        out     dx, eax
        in      eax, dx
        call    put32
        mov     al, 0x12
        call    iop
        mov     al, 7
        out     dx, al
        ; ---- requests
        mov     si, reqs
.next:  cmp     byte [si], 0xFF
        je      .done
        call    submit
        add     si, 15
        jmp     .next
.done:
        ; ---- reset and read back
        mov     al, 'Z'
        call    put8
        mov     al, 0x12
        call    iop
        mov     al, 0
        out     dx, al
        in      al, dx
        call    put8
        mov     al, 0x08
        call    iop
        in      eax, dx
        call    put32
        mov     al, 0x13
        call    iop
        in      al, dx
        call    put8
        mov     al, 0x10
finish:
        out     EXITP, al
        cli
        hlt
        jmp     finish

; si -> request: dd type, dd sector, dd data phys, dw len, db flags
submit:
        movzx   ebx, word [nreq]
        mov     di, bx
        shl     di, 5
        add     di, 0x3000              ; header slot (RING offset)
        mov     eax, [si]
        mov     [fs:di], eax
        mov     dword [fs:di+4], 0
        mov     eax, [si+4]
        mov     [fs:di+8], eax
        mov     dword [fs:di+12], 0
        mov     byte [fs:di+16], 0xEE
        movzx   ebp, di                 ; header offset
        imul    di, bx, 48              ; descriptor 3k
        ; avail.ring[k % 256] = 3k
        mov     ax, bx
        imul    ax, ax, 3
        and     bx, 0xFF
        shl     bx, 1
        mov     [fs:0x1004+bx], ax
        ; header
        lea     eax, [ebp+0x10000]
        mov     ecx, 16
        test    byte [si+14], F_SHORT
        jz      .h16
        mov     cl, 8
.h16:   mov     bx, 1
        call    putdesc
        ; data
        movzx   ecx, word [si+12]
        jcxz    .nod
        mov     eax, [si+8]
        movzx   bx, byte [si+14]
        and     bx, F_WR
        or      bx, 1
        call    putdesc
.nod:   lea     eax, [ebp+0x10010]
        mov     ecx, 1
        mov     bx, 2
        call    putdesc
        inc     word [nreq]
        test    byte [si+14], F_DEFER
        jnz     .ret
        mov     ax, [nreq]
        mov     [fs:0x1002], ax
        mov     al, 0x10
        call    iop
        xor     ax, ax
.notify:                                ; (record.py's breakpoint)
        out     dx, ax
        ; wait for the used index
        mov     ecx, 0x10000000
        test    byte [si+14], F_NOCMP
        jz      .poll
        mov     ecx, 0x10000
.poll:  mov     ax, [fs:0x2002]
        cmp     ax, [nreq]
        je      .ok
        pause
        dec     ecx
        jnz     .poll
        mov     al, 'T'
        call    put8
.ok:    mov     al, 'R'
        call    put8
        mov     al, 0x13
        call    iop
        in      al, dx
        call    put8
.elem:  mov     bx, [nused]
        cmp     bx, [fs:0x2002]
        je      .dump
        inc     word [nused]
        and     bx, 0xFF
        shl     bx, 3
        mov     eax, [fs:0x2004+bx]
        call    put32
        push    eax
        mov     eax, [fs:0x2008+bx]
        call    put32
        pop     eax
        xor     edx, edx
        mov     ecx, 3
        div     ecx
        shl     ax, 5
        mov     bx, ax
        mov     al, [fs:0x3010+bx]
        call    put8
        jmp     .elem
.dump:  test    byte [si+14], F_DUMP
        jz      .ret
        push    ds
        mov     ebx, [si+8]
        shr     ebx, 4
        mov     ds, bx
        mov     bx, [cs:si+8]
        and     bx, 15
        mov     cx, 32
.dl:    mov     al, [bx]
        call    put8
        inc     bx
        loop    .dl
        pop     ds
.ret:   ret

dwz:    dq      20                      ; WRITE_ZEROES: sector 20,
        dd      2, 0                    ; 2 sectors, flags 0
dsc:    dq      30                      ; DISCARD: sector 30, 1 sector
        dd      1, 0

%macro REQ 5
        dd      %1, %2, %3
        dw      %4
        db      %5
%endmacro
reqs:
        REQ     0, 1, 0x14000, 1024, F_WR|F_DUMP       ; IN sectors 1-2
        REQ     1, 5, 0x14000, 1024, 0                  ; OUT to 5-6
        REQ     4, 0, 0, 0, 0                           ; FLUSH
        REQ     8, 0, 0x15000, 20, F_WR|F_DUMP          ; GET_ID
        REQ     0x55, 0, 0x15000, 512, F_WR             ; unknown: UNSUPP
        REQ     0, 4096, 0x15000, 512, F_WR             ; past the end: IOERR
        REQ     0, 4095, 0x15000, 1024, F_WR            ; straddles the end: IOERR
        REQ     1, 10, 0x14000, 512, F_DEFER            ; OUT 10 \ merged
        REQ     1, 11, 0x14200, 512, 0                  ; OUT 11 /
        REQ     0, 10, 0x16000, 1024, F_WR|F_DUMP       ; IN 10-11
        REQ     13, 0, dwz, 16, 0                       ; WRITE_ZEROES 20-21
        REQ     11, 0, dsc, 16, 0                       ; DISCARD 30
        REQ     0, 20, 0x16000, 512, F_WR|F_DUMP        ; IN 20
        REQ     0, 1, 0x16000, 512, F_WR|F_SHORT|F_NOCMP ; short header: broken
        REQ     0, 2, 0x16000, 512, F_WR|F_NOCMP        ; not processed
        db      0xFF

        times   NSECT*512-4-($-$$) db 0
sig:    dd      0x4B4C4256
