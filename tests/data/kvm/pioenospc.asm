; pioenospc.asm -- WRITE SECTORS of this very sector to LBA 5 by PIO, wait
; until not busy, report the final status on isa-debugcon (0xE9), exit
; through isa-debug-exit with 0x10.  Used with a drive whose first write
; fails with ENOSPC (werror=enospc pauses the VM; cont retries).
BITS 16
ORG 0x7C00
        cli
        xor     ax, ax
        mov     ds, ax
        mov     dx, 0x3F6
        mov     al, 0x02            ; nIEN
        out     dx, al
        mov     dx, 0x1F6
        mov     al, 0xE0            ; master, LBA
        out     dx, al
        mov     dx, 0x1F2
        mov     al, 1
        out     dx, al
        mov     dx, 0x1F3
        mov     al, 5               ; LBA 5
        out     dx, al
        xor     al, al
        mov     dx, 0x1F4
        out     dx, al
        mov     dx, 0x1F5
        out     dx, al
        mov     dx, 0x1F7
        mov     al, 0x30            ; WRITE SECTORS
        out     dx, al
busy1:  in      al, dx
        test    al, 0x80
        jnz     busy1
        mov     si, 0x7C00
        mov     cx, 256
        mov     dx, 0x1F0
        rep     outsw
        mov     dx, 0x1F7
busy2:  in      al, dx
        test    al, 0x80
        jnz     busy2
        out     0xE9, al
        mov     al, 0x10
        out     0xF4, al
        jmp     $
        times 510-($-$$) db 0
        dw      0xAA55
