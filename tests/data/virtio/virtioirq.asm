; virtioirq.asm -- a legacy virtio-blk request completed by interrupt,
; with the PIC as the firmware left it (recorded under QEMU 7.2 + SeaBIOS
; by tests/data/virtio/record_probe.py).  Prints (debugcon, raw): the
; PIC's IMR (master, slave) and ELCR (0x4D0, 0x4D1) as left; then masks
; everything but the cascade and the device's line, hooks vectors
; 0x08-0x0F and 0x70-0x77 (SeaBIOS's bases), STI, submits a GET_ID and
; waits for the interrupt: 'V' + the vector taken + the ISR the handler
; read + the interrupts counted, or 'T'.  Then the same with the handler
; not reading the ISR before its EOI: a level-triggered line fires again
; (the count then shows it; the second handler call reads the ISR).
BITS 16
ORG 0x7C00
        cli
        xor     ax, ax
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     sp, 0x7C00
        cld
        cmp     dword [sig], 0x51524956     ; 'VIRQ'
        je      main
        mov     ax, 0x0202                  ; the other two sectors
        mov     bx, 0x7E00
        mov     cx, 0x0002
        mov     dx, 0x0080
        int     0x13
        cli
        cmp     dword [sig], 0x51524956
        je      main
        jmp     done

        times   510-($-$$) db 0
        dw      0xAA55

main:   mov     ebx, 0x80000000
.scan:  mov     eax, ebx
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      eax, dx
        cmp     eax, 0x10011AF4
        je      .found
        add     ebx, 0x800
        cmp     ebx, 0x80010000
        jb      .scan
        jmp     done
.found: mov     eax, ebx
        or      al, 0x10
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      eax, dx
        and     ax, 0xFFFC
        mov     [iob], ax
        mov     eax, ebx
        or      al, 0x3C
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      al, dx
        mov     [line], al
        out     0xE9, al
        in      al, 0x21
        out     0xE9, al
        in      al, 0xA1
        out     0xE9, al
        mov     dx, 0x4D0
        in      al, dx
        out     0xE9, al
        inc     dx
        in      al, dx
        out     0xE9, al
        ; hook 0x08-0x0F and 0x70-0x77
        mov     di, 0x08 * 4
        mov     ax, stubs
        mov     cx, 8
.h1:    mov     [di], ax
        mov     word [di+2], 0
        add     ax, 5
        add     di, 4
        loop    .h1
        mov     di, 0x70 * 4
        mov     cx, 8
.h2:    mov     [di], ax
        mov     word [di+2], 0
        add     ax, 5
        add     di, 4
        loop    .h2
        ; IMR: only the cascade and the device's line
        mov     al, 0xFB
        out     0x21, al
        mov     cl, [line]
        sub     cl, 8
        mov     al, 1
        shl     al, cl
        not     al
        out     0xA1, al
        mov     ax, 0x1000
        mov     fs, ax
        mov     es, ax
        xor     di, di
        xor     ax, ax
        mov     cx, 0x1800
        rep     stosw
        mov     es, cx
        ; the device: reset, ack, driver, queue at 0x10000, driver ok
        mov     dx, [iob]
        add     dx, 0x12
        mov     al, 0
        out     dx, al
        mov     al, 3
        out     dx, al
        mov     dx, [iob]
        add     dx, 0x08
        mov     eax, 0x10
        out     dx, eax
        mov     dx, [iob]
        add     dx, 0x12
        mov     al, 7
        out     dx, al
        ; two rounds: handler reads the ISR at once / only on its 2nd call
        mov     byte [late], 0
        call    round
        mov     byte [late], 1
        call    round
done:   mov     al, 0x10
        out     0xF4, al
        cli
        hlt
        jmp     done

; one GET_ID on descriptors 0..2 (re-used), wait for the handler
round:  mov     byte [count], 0
        mov     byte [vec], 0
        mov     byte [isrv], 0
        mov     dword [fs:0], hdr
        mov     dword [fs:4], 0
        mov     dword [fs:8], 16
        mov     dword [fs:12], 0x00010001
        mov     dword [fs:16], 0x14000
        mov     dword [fs:20], 0
        mov     dword [fs:24], 20
        mov     dword [fs:28], 0x00020003
        mov     dword [fs:32], 0x13000
        mov     dword [fs:36], 0
        mov     dword [fs:40], 1
        mov     dword [fs:44], 0x00000002
        mov     bx, [nreq]
        and     bx, 0xFF
        shl     bx, 1
        mov     word [fs:0x1004+bx], 0
        inc     word [nreq]
        mov     ax, [nreq]
        mov     [fs:0x1002], ax
        mov     dx, [iob]
        add     dx, 0x10
        xor     ax, ax
        sti
        out     dx, ax
        mov     ecx, 0x100000
.w:     cmp     byte [isrv], 0
        jne     .got
        dec     ecx
        jnz     .w
        cli
        mov     al, 'T'
        out     0xE9, al
        ret
.got:   mov     ecx, 0x8000             ; a level line would fire again here
.d:     dec     ecx
        jnz     .d
        cli
        mov     al, 'V'
        out     0xE9, al
        mov     al, [vec]
        out     0xE9, al
        mov     al, [isrv]
        out     0xE9, al
        mov     al, [count]
        out     0xE9, al
        ret

stubs:
%assign v 0x08
%rep 8
        push    ax
        mov     al, v
        jmp     short irqc
%assign v v+1
%endrep
%assign v 0x70
%rep 8
        push    ax
        mov     al, v
        jmp     short irqc
%assign v v+1
%endrep
irqc:   push    dx
        mov     [vec], al
        inc     byte [count]
        cmp     byte [late], 0
        je      .ack
        cmp     byte [count], 1
        je      .eoi
.ack:   mov     dx, [iob]
        add     dx, 0x13
        in      al, dx
        or      [isrv], al
.eoi:   mov     al, 0x20
        out     0xA0, al
        out     0x20, al
        pop     dx
        pop     ax
        iret

hdr:    dd      8, 0, 0, 0
iob:    dw      0
line:   db      0
late:   db      0
count:  db      0
vec:    db      0
isrv:   db      0
nreq:   dw      0
        times   1536-4-($-$$) db 0
sig:    dd      0x51524956
