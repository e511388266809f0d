; virtioprobe.asm -- second legacy virtio-blk boot program, recorded under
; real QEMU 7.2 by tests/data/virtio/record_probe.py (the first,
; virtioblk.asm, covers the basic request types).  This one probes the
; registers and the corners a driver can hit:
;
;   'A' the device as SeaBIOS left it (before any reset): status, queue
;       PFN, guest features, queue size, ISR, the config's wce byte;
;   'B' BAR0 accesses of every width, aligned and not (QEMU refuses an
;       unaligned access: it reads 0 and is dropped), config reads that
;       cross the end of the config, writes of odd widths;
;   'C' guest features: BAD_FEATURE, host & val, FEATURES_OK (8) in the
;       status freezes them, status written as a word and a dword;
;   'D' queue select: a queue that does not exist (size 0, PFN ignored),
;       select >= 1024 ignored, QUEUE_NUM is read-only;
;   'E' PFN 0 resets the whole device;
;   'F' the write cache (config byte 32): DRIVER_OK without CONFIG_WCE
;       sets it from the WCE (FLUSH) feature; reset restores it;
;   'G' request batches (see the batch table): split and combined
;       descriptors, several requests in flight, IOERR/UNSUPP cases,
;       barrier bits, odd lengths, zero-length reads, GET_ID sizes;
;   'H' notify: a dword of 0x10000 (>= 1024: ignored), queue 1, a byte
;       write, an empty ring;
;   'J' the avail index moved 300 ahead: 300 GET_IDs on one chain
;       complete (the used index wraps the ring);
;   'K' the same with reads: 256 in flight, then "Virtqueue size
;       exceeded" breaks the device; completions still write the status
;       byte and raise the ISR but not the used ring; the status register
;       keeps DRIVER_OK (legacy: no NEEDS_RESET); reset, re-init, works;
;   'L' virtio_error cases, each followed by a reset: a descriptor loop,
;       next out of range, head out of range, a zero-length buffer, a
;       readable buffer after a writable one, no writable buffer;
;   'M' a reset with reads in flight: they are drained first, so the
;       used ring has them, and the ISR is 0 after the reset;
;   'N' interrupt suppression: EVENT_IDX with used_event behind and ahead,
;       VRING_AVAIL_F_NO_INTERRUPT, NOTIFY_ON_EMPTY overriding it;
;   'O' an indirect table without INDIRECT_DESC acked, then one of 40
;       bytes (virtio_error);
;   'P' bus mastering off (status, a notify) and on again; MSI-X enabled
;       through its capability: the config moves to 0x18, the vector
;       registers at 0x14/0x16, no INTx; a ring whose avail and used
;       rings lie past the top of RAM (128 MiB: a hole, not an error);
;   'I' the INTx line: PCI status bit 3, the PIC's IRR, ISR read lowers
;       it, INTx disable in the command register.
; Output is raw bytes on debugcon (0xE9); exit through isa-debug-exit.
BITS 16
ORG 0x7C00

NSECT   equ 14
DBGC    equ 0xE9
EXITP   equ 0xF4
RING    equ 0x1000      ; segment of the ring area (phys 0x10000)
iob     equ 0x0500
cfga    equ 0x0504
nreq    equ 0x0508      ; avail idx written so far
nused   equ 0x050A      ; used elements printed so far
dnext   equ 0x050C      ; next free descriptor
feat    equ 0x0510      ; guest features for qinit
nst     equ 0x0514      ; status addresses of the batch
stl     equ 0x0520      ; .. list (dwords)

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
        cmp     dword [sig], 0x42525056     ; 'VPRB'
        je      .loaded
        mov     ax, 0x0200 + NSECT - 1
        mov     bx, 0x7E00
        mov     cx, 0x0002
        mov     dh, 0
        mov     dl, 0x80
        int     0x13
        cli
        cmp     dword [sig], 0x42525056
        je      .loaded
        mov     al, 'L'
        jmp     finish
.loaded:
        jmp     main

        times   510-($-$$) db 0
        dw      0xAA55

; ---- output
put8:   out     DBGC, al
        ret
put16:  call    put8
        xchg    al, ah
        call    put8
        xchg    al, ah
        ret
put32:  push    eax
        call    put16
        shr     eax, 16
        call    put16
        pop     eax
        ret

cfgrd:  mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      eax, dx
        ret

; dx = iob + al
iop:    movzx   dx, al
        add     dx, [iob]
        ret

%macro TAG 1
        mov     al, %1
        call    put8
%endmacro
%macro IN8 1
        mov     al, %1
        call    iop
        in      al, dx
        call    put8
%endmacro
%macro IN16 1
        mov     al, %1
        call    iop
        in      ax, dx
        call    put16
%endmacro
%macro IN32 1
        mov     al, %1
        call    iop
        in      eax, dx
        call    put32
%endmacro
%macro OUT8 2
        mov     al, %1
        call    iop
        mov     al, %2
        out     dx, al
%endmacro
%macro OUT16 2
        mov     al, %1
        call    iop
        mov     ax, %2
        out     dx, ax
%endmacro
%macro OUT32 2
        mov     al, %1
        call    iop
        mov     eax, %2
        out     dx, eax
%endmacro

; a busy loop of ecx rounds (no PAUSE: KVM exits on pause loops)
delay:  dec     ecx
        jnz     delay
        ret

; ---- queue setup: reset, ACK, DRIVER, features [feat], queue 0 at PFN
; 0x10 (ring area zeroed), DRIVER_OK
qinit:
        OUT8    0x12, 0
        OUT8    0x12, 1
        OUT8    0x12, 3
        mov     al, 0x04
        call    iop
        mov     eax, [feat]
        out     dx, eax
        OUT16   0x0E, 0
        push    es
        mov     ax, RING
        mov     es, ax
        xor     di, di
        xor     ax, ax
        mov     cx, 0x3000 / 2
        rep     stosw
        pop     es
        OUT32   0x08, 0x10
        OUT8    0x12, 7
        xor     ax, ax
        mov     [nreq], ax
        mov     [nused], ax
        mov     [dnext], ax
        ret

; ax = head: avail.ring[nreq % 256] = ax, nreq++
apush:  movzx   bx, byte [nreq]
        shl     bx, 1
        mov     [fs:0x1004+bx], ax
        inc     word [nreq]
        ret

publish:
        mov     ax, [nreq]
        mov     [fs:0x1002], ax
        ret

kick:   call    publish
        OUT16   0x10, 0
        ret

; wait until used idx - nused == cx (bounded), 'T' on timeout
waitused:
        mov     ebx, 0x1000000
.p:     mov     ax, [fs:0x2002]
        sub     ax, [nused]
        cmp     ax, cx
        je      .ok
        dec     ebx
        jnz     .p
        TAG     'T'
.ok:    ret

; 'R', ISR, once the interrupt is up (isrrd: at once)
isrrep: call    waitint
isrrd:  TAG     'R'
        IN8     0x13
        ret

; wait (bounded) for the interrupt status bit of the PCI status register:
; QEMU raises INTx from its main loop, a moment after the used index
waitint:
        mov     ecx, 0x10000
.w:     mov     eax, [cfga]
        or      al, 0x04
        call    cfgrd
        test    eax, 0x80000
        jnz     .r
        dec     ecx
        jnz     .w
.r:     ret

; print the new used elements (id, len)
usedrep:
.e:     mov     bx, [nused]
        cmp     bx, [fs:0x2002]
        je      .d
        inc     word [nused]
        and     bx, 0xFF
        shl     bx, 3
        mov     eax, [fs:0x2004+bx]
        call    put32
        mov     eax, [fs:0x2008+bx]
        call    put32
        jmp     .e
.d:     ret

; eax = phys (0x10000..0x1FFFF) -> bx = offset in FS
fsoff:  sub     eax, 0x10000
        mov     bx, ax
        ret

; ---- batch interpreter.  si -> batch:
;   db expect (0xFF: none expected, short poll)
;   chains: dd status address (0xFFFFFFFF ends), then descriptors
;           dd addr, dd len, db flags (0x80: last of the chain)
;   dumps:  dd addr, dw len (addr 0 ends)
; returns si past the batch
batch:
        lodsb
        mov     [bexp], al
        mov     word [nst], 0
.chain: lodsd
        cmp     eax, 0xFFFFFFFF
        je      .go
        movzx   bx, byte [nst]
        shl     bx, 2
        mov     [stl+bx], eax
        inc     word [nst]
        test    eax, eax
        jz      .nost
        call    fsoff
        mov     byte [fs:bx], 0xEE
.nost:  mov     ax, [dnext]
        push    ax                      ; head
.desc:  mov     di, [dnext]
        and     di, 0xFF
        shl     di, 4
        lodsd
        mov     [fs:di], eax
        mov     dword [fs:di+4], 0
        lodsd
        mov     [fs:di+8], eax
        lodsb
        mov     bl, al
        and     al, 0x7F
        movzx   ax, al
        test    bl, 0x80
        jnz     .last
        or      ax, 1
.last:  mov     [fs:di+12], ax
        mov     ax, [dnext]
        inc     ax
        and     ax, 0xFF
        mov     [fs:di+14], ax
        mov     [dnext], ax
        test    bl, 0x80
        jz      .desc
        pop     ax
        and     ax, 0xFF
        call    apush
        jmp     .chain
.go:    call    kick
        movzx   cx, byte [bexp]
        cmp     cl, 0xFF
        jne     .wait
        mov     ecx, 0x8000
        call    delay
        call    isrrd                   ; no interrupt to wait for
        jmp     .rep
.wait:  call    waitused
        call    isrrep
.rep:
        call    usedrep
        ; status bytes
        xor     bp, bp
.st:    cmp     bp, [nst]
        je      .dump
        mov     bx, bp
        shl     bx, 2
        mov     eax, [stl+bx]
        inc     bp
        test    eax, eax
        jz      .st
        call    fsoff
        mov     al, [fs:bx]
        call    put8
        jmp     .st
.dump:  lodsd
        test    eax, eax
        jz      .bret
        call    fsoff
        lodsw
        mov     cx, ax
.dl:    mov     al, [fs:bx]
        call    put8
        inc     bx
        loop    .dl
        jmp     .dump
.bret:  ret
bexp:   db      0

; fill cx bytes at FS:di with al
fsfill: mov     [fs:di], al
        inc     di
        loop    fsfill
        ret

main:
        mov     ax, RING
        mov     fs, ax
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
        mov     eax, ebx
        or      al, 0x10
        call    cfgrd
        and     ax, 0xFFFC
        mov     [iob], ax
        mov     eax, [cfga]
        or      al, 0x3C
        call    cfgrd
        call    put8                    ; interrupt line

        ; ---- A: as SeaBIOS left it
        TAG     'A'
        IN8     0x12
        IN32    0x08
        IN32    0x04
        IN16    0x0C
        IN8     0x13
        IN8     0x34

        ; ---- B: widths
        OUT8    0x12, 0
        OUT8    0x12, 1
        OUT8    0x12, 3
        TAG     'B'
        IN16    0x00
        IN16    0x02
        IN32    0x12
        IN16    0x12
        IN16    0x13
        IN32    0x0E
        IN16    0x0E
        IN32    0x0C
        IN8     0x0D
        IN32    0x10
        IN16    0x11
        IN32    0x14
        IN32    0x18
        IN16    0x16
        IN16    0x15
        IN32    0x16
        IN32    0x48
        IN32    0x4C
        IN16    0x4C
        IN8     0x4C
        IN8     0x4D
        IN32    0x50
        IN32    0x7C
        OUT8    0x04, 0xFF
        IN32    0x04
        OUT16   0x06, 0xFFFF
        IN32    0x04
        OUT32   0x04, 0x12345678
        IN32    0x04
        OUT16   0x05, 0x0000            ; unaligned: dropped
        IN32    0x04
        OUT16   0x12, 0x0203            ; a word: status = low byte
        IN8     0x12
        OUT16   0x11, 0x0000            ; unaligned: dropped
        IN8     0x12

        ; ---- C: features
        TAG     'C'
        OUT32   0x04, 0xFFFFFFFF        ; BAD_FEATURE: assume nothing
        IN32    0x04
        OUT32   0x04, 0xBFFFFFFF
        IN32    0x04
        OUT8    0x12, 0x0B              ; FEATURES_OK
        IN8     0x12
        OUT32   0x04, 0
        IN32    0x04
        OUT8    0x12, 3
        OUT32   0x04, 0
        IN32    0x04
        OUT32   0x12, 0xFFFFFF07        ; an unaligned dword: dropped
        IN8     0x12
        IN32    0x04

        ; ---- D: queue select
        TAG     'D'
        OUT16   0x0E, 1
        IN16    0x0C
        IN32    0x08
        OUT32   0x08, 0x20
        IN32    0x08
        OUT16   0x0E, 0x3FF
        IN16    0x0E
        OUT16   0x0E, 0x400
        IN16    0x0E
        OUT8    0x0E, 5
        IN16    0x0E
        OUT16   0x0E, 0
        OUT16   0x0C, 16
        IN16    0x0C
        IN32    0x08

        ; ---- E: PFN 0 resets
        TAG     'E'
        OUT32   0x04, 0x200
        OUT32   0x08, 0x10
        OUT8    0x12, 7
        OUT16   0x0E, 0
        IN32    0x08
        OUT32   0x08, 0
        IN8     0x12
        IN32    0x04
        IN32    0x08

        ; ---- F: write cache
        TAG     'F'
        mov     dword [feat], 0
        call    qinit
        IN8     0x34                    ; DRIVER_OK without WCE: writethrough
        OUT8    0x34, 1
        IN8     0x34
        OUT8    0x12, 0                 ; reset: the drive's own mode
        IN8     0x34
        OUT8    0x12, 1
        OUT8    0x12, 3
        OUT32   0x04, 0x800             ; CONFIG_WCE: left alone
        OUT8    0x34, 0
        OUT8    0x12, 7
        IN8     0x34
        mov     dword [feat], 0x200     ; WCE (FLUSH)
        call    qinit
        IN8     0x34
        OUT8    0x14, 0x55              ; capacity is not writable
        IN8     0x14
        IN8     0x34

        ; ---- G: request batches (features 0)
        mov     dword [feat], 0
        call    qinit
        TAG     'G'
        mov     si, batches
.bl:    cmp     byte [si], 0xFE
        je      .bd
        TAG     'g'
        call    batch
        jmp     .bl
.bd:
        ; ---- H: notify forms
        TAG     'H'
        mov     si, hchain
        call    bchain
        call    publish
        OUT32   0x10, 0x10000           ; >= VIRTIO_QUEUE_MAX: ignored
        mov     ecx, 0x8000
        call    delay
        mov     ax, [fs:0x2002]
        call    put16
        OUT16   0x10, 1                 ; queue 1 has no ring
        mov     ecx, 0x8000
        call    delay
        mov     ax, [fs:0x2002]
        call    put16
        OUT8    0x10, 0                 ; a byte write of 0 does notify
        mov     cx, 1
        call    waitused
        call    isrrep
        call    usedrep
        OUT16   0x10, 0                 ; empty ring
        mov     ecx, 0x8000
        call    delay
        IN8     0x13
        mov     ax, [fs:0x2002]
        call    put16

        ; ---- J: avail idx 300 ahead, all GET_ID on one chain
        TAG     'J'
        call    qinit
        mov     si, hchain
        call    bchain                  ; head 0, avail[0] = 0, nreq 1
        mov     word [nreq], 300        ; avail[*] all 0 (zeroed ring)
        call    kick
        mov     cx, 300
        call    waitused
        call    isrrep
        mov     ax, [fs:0x2002]
        call    put16
        mov     eax, [fs:0x2004]
        call    put32
        mov     eax, [fs:0x2004+8*43]   ; 300 - 256 - 1: the last one
        call    put32
        mov     eax, [fs:0x2004+8*44]   ; from the first lap
        call    put32

        ; ---- K: 300 reads on one chain: 256 in flight, then broken
        TAG     'K'
        call    qinit
        mov     si, kchain
        call    bchain
        mov     word [nreq], 300
        call    kick
        mov     ebx, 0x1000000         ; the ISR rises at a completion
.kw:    mov     al, 0x13
        call    iop
        in      al, dx
        test    al, al
        jnz     .kg
        dec     ebx
        jnz     .kw
        TAG     'T'
.kg:    call    put8
        mov     ecx, 0x10000
        call    delay
        mov     ax, [fs:0x2002]
        call    put16
        mov     al, [fs:0x3000]
        call    put8
        IN8     0x12
        mov     ax, [fs:0x2002]         ; a notify is ignored while broken
        OUT16   0x10, 0
        mov     ecx, 0x8000
        call    delay
        mov     ax, [fs:0x2002]
        call    put16
        call    qinit                   ; reset: works again
        mov     si, hchain
        call    bchain
        call    kick
        mov     cx, 1
        call    waitused
        call    isrrep
        call    usedrep

        ; ---- L: virtio_error cases
        TAG     'L'
        mov     si, lcases
.lc:    cmp     byte [si], 0xFE
        je      .ld
        call    qinit
        TAG     'l'
        call    batch
        IN8     0x12
        jmp     .lc
.ld:
        ; head out of range
        call    qinit
        TAG     'l'
        mov     ax, 300
        call    apush
        call    kick
        call    lshow
        mov     ax, 0                   ; a descriptor loop: 0 -> 0
        call    lraw
        mov     ax, 300                 ; next out of range
        call    lraw

        ; ---- M: reset with reads in flight
        TAG     'M'
        call    qinit
        mov     si, mchains
.mc:    cmp     dword [si], 0xFFFFFFFF
        je      .md
        call    bchain
        jmp     .mc
.md:    call    kick
        OUT8    0x12, 0
        mov     ax, [fs:0x2002]
        call    put16
        IN8     0x13
        mov     al, [fs:0x3000]
        call    put8
        mov     al, [fs:0x3010]
        call    put8
        mov     al, [fs:0x3020]
        call    put8
        mov     al, [fs:0x3030]
        call    put8
        IN32    0x08

        ; ---- N: interrupt suppression
        TAG     'N'
        mov     dword [feat], 1 << 29   ; EVENT_IDX
        call    qinit
        call    nget
        call    isrrep                  ; the first completion: notified
        call    nrep
        mov     word [fs:0x1204], 5     ; used_event far ahead: none
        call    nget
        call    nquiet
        mov     word [fs:0x1204], 2     ; used_event 2: the third one is
        call    nget
        call    isrrep
        call    nrep
        mov     dword [feat], 0         ; NO_INTERRUPT without EVENT_IDX
        call    qinit
        mov     word [fs:0x1000], 1
        call    nget
        call    nquiet
        mov     dword [feat], 1 << 24   ; NOTIFY_ON_EMPTY overrides it
        call    qinit
        mov     word [fs:0x1000], 1
        call    nget
        call    isrrep
        call    nrep

        ; ---- O: an indirect table (INDIRECT_DESC not acked)
        TAG     'O'
        mov     dword [feat], 0
        call    qinit
        mov     si, otable
        mov     di, 0x7000
        mov     cx, 48
.ot:    lodsb
        mov     [fs:di], al
        inc     di
        loop    .ot
        mov     byte [fs:0x3000], 0xEE
        mov     dword [fs:0], 0x17000
        mov     dword [fs:4], 0
        mov     dword [fs:8], 48
        mov     dword [fs:12], 4        ; INDIRECT
        xor     ax, ax
        call    apush
        call    kick
        mov     cx, 1
        call    waitused
        call    isrrep
        call    usedrep
        mov     al, [fs:0x3000]
        call    put8
        mov     eax, [fs:0x4000]
        call    put32
        mov     dword [fs:16], 0x17000  ; a table of 40 bytes: virtio_error
        mov     dword [fs:20], 0
        mov     dword [fs:24], 40
        mov     dword [fs:28], 4
        mov     ax, 1
        call    apush
        call    kick
        call    lshow

        ; ---- P: bus mastering off and on, then MSI-X enabled
        TAG     'P'
        mov     dword [feat], 0
        call    qinit
        mov     bl, 0x04
        call    cfgrw
        mov     [cmdsv], ax
        and     ax, 0xFFFB              ; MASTER off
        call    cfgww
        IN8     0x12
        mov     si, hchain
        call    bchain
        call    kick
        call    pshow
        mov     bl, 0x04
        mov     ax, [cmdsv]             ; MASTER on
        call    cfgww
        IN8     0x12
        OUT16   0x10, 0
        call    pshow
        call    qinit
        call    nget
        call    isrrep
        call    usedrep
        mov     bl, 0x40                ; MSI-X capability
        call    cfgrd4
        mov     bl, 0x42
        mov     ax, 0x8000              ; enable
        call    cfgww
        mov     bl, 0x40
        call    cfgrd4
        IN32    0x14
        IN32    0x18
        OUT16   0x14, 0                 ; config vector 0
        OUT16   0x16, 5                 ; queue vector 5: no such vector
        IN16    0x14
        IN16    0x16
        call    nget
        mov     ecx, 0x8000
        call    delay
        call    isrrd
        call    usedrep
        mov     bl, 0x06
        call    cfgrw
        call    put16                   ; PCI status: no INTx
        mov     bl, 0x42
        xor     ax, ax                  ; disable
        call    cfgww
        mov     bl, 0x40
        call    cfgrd4
        IN32    0x14
        OUT8    0x12, 0                 ; the ring's last page at the top of
        OUT8    0x12, 3                 ; RAM, avail and used past it (a hole:
        OUT32   0x08, 0x7FFF            ; no error), a notify, then PFN 0
        IN32    0x08
        OUT8    0x12, 7
        OUT16   0x10, 0
        mov     ecx, 0x8000
        call    delay
        IN8     0x12
        IN8     0x13
        OUT32   0x08, 0
        IN32    0x08

        ; ---- I: INTx
        TAG     'I'
        call    qinit
        call    intx
        mov     eax, [cfga]
        or      al, 0x04
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      ax, dx
        or      ax, 0x400
        out     dx, ax
        call    intx
        mov     eax, [cfga]
        or      al, 0x04
        mov     dx, 0xCF8
        out     dx, eax
        mov     dx, 0xCFC
        in      ax, dx
        and     ax, 0xFBFF
        out     dx, ax

        mov     al, 'Z'
        call    put8
        mov     al, 0x10
finish:
        out     EXITP, al
        cli
        hlt
        jmp     finish

; after a broken request: used index, status register
lshow:  mov     ecx, 0x8000
        call    delay
        mov     ax, [fs:0x2002]
        call    put16
        IN8     0x12
        ret

; descriptor 0: a readable header with NEXT, next = ax
lraw:   push    ax
        call    qinit
        TAG     'l'
        pop     ax
        mov     dword [fs:0], h_in1
        mov     dword [fs:4], 0
        mov     dword [fs:8], 16
        mov     word [fs:12], 1
        mov     [fs:14], ax
        xor     ax, ax
        call    apush
        call    kick
        jmp     lshow

; config space of the device at offset bl: word read -> ax, word
; write of ax, dword read printed
cfgrw:  push    bx
        mov     eax, [cfga]
        mov     al, bl
        and     al, 0xFC
        mov     dx, 0xCF8
        out     dx, eax
        pop     bx
        movzx   dx, bl
        and     dl, 3
        add     dx, 0xCFC
        in      ax, dx
        ret
cfgww:  push    ax
        push    bx
        mov     eax, [cfga]
        mov     al, bl
        and     al, 0xFC
        mov     dx, 0xCF8
        out     dx, eax
        pop     bx
        pop     ax
        movzx   dx, bl
        and     dl, 3
        add     dx, 0xCFC
        out     dx, ax
        ret
cfgrd4: mov     eax, [cfga]
        mov     al, bl
        call    cfgrd
        call    put32
        ret
cmdsv:  dw      0
; P: after a while: used index, ISR
pshow:  mov     ecx, 0x8000
        call    delay
        mov     ax, [fs:0x2002]
        call    put16
        call    isrrd
        ret

; N: one GET_ID, wait for it
nget:   mov     si, hchain
        call    bchain
        call    kick
        mov     cx, 1
        call    waitused
        ret
; N: used elements, avail_event, used flags
nrep:   call    usedrep
        mov     ax, [fs:0x2804]
        call    put16
        mov     ax, [fs:0x2000]
        call    put16
        ret
; N: no interrupt expected: the ISR after a pause
nquiet: mov     ecx, 0x8000
        call    delay
        call    isrrd
        jmp     nrep

otable: dq      h_in2
        dd      16
        dw      1, 1
        dq      0x14000
        dd      512
        dw      3, 2
        dq      0x13000
        dd      1
        dw      2, 0

; one GET_ID, then: PCI status, PIC IRR (master, slave), ISR, PCI status, IRR
intx:   mov     si, hchain
        call    bchain
        call    kick
        mov     cx, 1
        call    waitused
        call    usedrep
        call    waitint
        call    irqrep
        IN8     0x13
        call    irqrep
        ret

irqrep: mov     eax, [cfga]
        or      al, 0x04
        call    cfgrd
        shr     eax, 16
        call    put16
        mov     al, 0x0A
        out     0x20, al
        out     0xA0, al
        in      al, 0x20
        call    put8
        in      al, 0xA0
        call    put8
        ret

; si -> one chain of the batch format (status address, descriptors):
; write it and push its head (no publish); si past it
bchain: lodsd
        test    eax, eax
        jz      .n
        call    fsoff
        mov     byte [fs:bx], 0xEE
.n:     mov     ax, [dnext]
        push    ax
.desc:  mov     di, [dnext]
        and     di, 0xFF
        shl     di, 4
        lodsd
        mov     [fs:di], eax
        mov     dword [fs:di+4], 0
        lodsd
        mov     [fs:di+8], eax
        lodsb
        mov     bl, al
        and     al, 0x7F
        movzx   ax, al
        test    bl, 0x80
        jnz     .last
        or      ax, 1
.last:  mov     [fs:di+12], ax
        mov     ax, [dnext]
        inc     ax
        and     ax, 0xFF
        mov     [fs:di+14], ax
        mov     [dnext], ax
        test    bl, 0x80
        jz      .desc
        pop     ax
        and     ax, 0xFF
        call    apush
        ret

; ---- data
R       equ     0x00            ; device-readable
W       equ     0x02            ; device-writable
E       equ     0x80            ; end of chain
%define HDR(t, s) dd t, 0, s & 0xFFFFFFFF, s >> 32
%macro D 3
        dd      %1, %2
        db      %3
%endmacro
%macro ST 1
        dd      %1
%endmacro
ENDC    equ     0xFFFFFFFF

h_in2:  HDR(0, 2)
h_in3b: HDR(0x80000000, 3)
h_in40: HDR(0, 40)
h_gid:  HDR(8, 0)
h_gid9: HDR(9, 0)
h_unk:  HDR(2, 0)
cdb:    db 0x12, 0, 0, 0, 36, 0
h_fl5:  HDR(5, 0)
h_in5:  HDR(0, 5)
h_in6:  HDR(0, 6)
h_in7:  HDR(0, 7)
h_in1:  HDR(0, 1)
h_in8:  HDR(0, 8)
h_in9:  HDR(0, 9)
h_in12: HDR(0, 12)
h_out1: HDR(1, 50)
h_cap:  HDR(0, 4096)
h_cap1: HDR(0, 4097)
h_huge: HDR(0, 0xFFFFFFFFFFFFFFFF)
h_dc10: HDR(10, 0)
h_dc:   HDR(11, 0)
h_wz:   HDR(13, 0)
h_wz12: HDR(12, 0)
h_out0: HDR(1, 4096)
; discard / write-zeroes segments: sector, num, flags
s_unm:  dq 30
        dd 1, 1
s_wzf:  dq 30
        dd 1, 2
s_big:  dq 0
        dd 4097, 0
s_two:  dq 30
        dd 1, 0
        dq 31
        dd 1, 0
s_zero: dq 30
        dd 0, 0
s_wz4:  dq 4095
        dd 2, 0
; a write to sector 40: header and data in one buffer
wr40:   dd 1, 0, 40, 0
%assign i 0
%rep 512
        db (i * 7 + 3) & 0xFF
%assign i i+1
%endrep

batches:
        ; 1: IN sector 2, header split 8+8, data split 100+412, status apart
        db      1
        ST      0x13000
        D       h_in2, 8, R
        D       h_in2+8, 8, R
        D       0x14000, 100, W
        D       0x14064, 412, W
        D       0x13000, 1, W|E
        dd      ENDC
        dd      0x14000
        dw      16
        dd      0x1405C
        dw      16
        dd      0
        ; 2: OUT sector 40, header + data in one buffer; then read it back
        ;    into one 513-byte buffer (data + status)
        db      1
        ST      0x13010
        D       wr40, 528, R
        D       0x13010, 1, W|E
        dd      ENDC
        dd      0
        db      1
        ST      0x14200
        D       h_in40, 16, R
        D       0x14000, 513, W|E
        dd      ENDC
        dd      0x14000
        dw      16
        dd      0x141F0
        dw      16
        dd      0
        ; 3: in flight together: IN 7, GET_ID, IN 5, unknown type, IN 6
        ;    (the synchronous ones complete first; 5, 6, 7 merge)
        db      5
        ST      0x13020
        D       h_in7, 16, R
        D       0x15000, 512, W
        D       0x13020, 1, W|E
        ST      0x13030
        D       h_gid, 16, R
        D       0x15200, 20, W
        D       0x13030, 1, W|E
        ST      0x13040
        D       h_in5, 16, R
        D       0x15400, 512, W
        D       0x13040, 1, W|E
        ST      0x13050
        D       h_unk, 16, R
        D       0x15600, 512, W
        D       0x13050, 1, W|E
        ST      0x13060
        D       h_in6, 16, R
        D       0x15800, 512, W
        D       0x13060, 1, W|E
        dd      ENDC
        dd      0x15000
        dw      8
        dd      0x15400
        dw      8
        dd      0x15800
        dw      8
        dd      0
        ; 4: synchronous errors together
        db      12
        ST      0x13070                 ; IN of 100 bytes: IOERR
        D       h_in1, 16, R
        D       0x16000, 100, W
        D       0x13070, 1, W|E
        ST      0x13080                 ; OUT of 100 bytes: IOERR
        D       h_out1, 16, R
        D       0x16000, 100, R
        D       0x13080, 1, W|E
        ST      0x13090                 ; 0 bytes past the end: IOERR
        D       h_cap1, 16, R
        D       0x13090, 1, W|E
        ST      0x130A0                 ; sector 2^64-1: IOERR
        D       h_huge, 16, R
        D       0x16000, 512, W
        D       0x130A0, 1, W|E
        ST      0x130B0                 ; SCSI (2): UNSUPP
        D       h_unk, 16, R
        D       0x130B0, 1, W|E
        ST      0x130C0                 ; GET_ID|OUT into 8 bytes
        D       h_gid9, 16, R
        D       0x16200, 8, W
        D       0x130C0, 1, W|E
        ST      0x130D0                 ; DISCARD without the OUT bit
        D       h_dc10, 16, R
        D       s_two, 16, R
        D       0x130D0, 1, W|E
        ST      0x130E0                 ; DISCARD with UNMAP: UNSUPP
        D       h_dc, 16, R
        D       s_unm, 16, R
        D       0x130E0, 1, W|E
        ST      0x130F0                 ; WRITE_ZEROES flag 2: UNSUPP
        D       h_wz, 16, R
        D       s_wzf, 16, R
        D       0x130F0, 1, W|E
        ST      0x13100                 ; DISCARD of two segments: UNSUPP
        D       h_dc, 16, R
        D       s_two, 32, R
        D       0x13100, 1, W|E
        ST      0x13110                 ; WRITE_ZEROES 4097 sectors: IOERR
        D       h_wz, 16, R
        D       s_big, 16, R
        D       0x13110, 1, W|E
        ST      0x13120                 ; WRITE_ZEROES 4095+2: IOERR
        D       h_wz, 16, R
        D       s_wz4, 16, R
        D       0x13120, 1, W|E
        dd      ENDC
        dd      0x16200
        dw      8
        dd      0
        ; 5..: one asynchronous request each
        db      1                       ; IN|BARRIER sector 3
        ST      0x13130
        D       h_in3b, 16, R
        D       0x16400, 512, W
        D       0x13130, 1, W|E
        dd      ENDC
        dd      0x16400
        dw      8
        dd      0
        db      1                       ; 0 bytes at the end: OK
        ST      0x13140
        D       h_cap, 16, R
        D       0x13140, 1, W|E
        dd      ENDC
        dd      0
        db      1                       ; FLUSH|OUT (5): a flush
        ST      0x13150
        D       h_fl5, 16, R
        D       0x13150, 1, W|E
        dd      ENDC
        dd      0
        db      1                       ; DISCARD of 0 sectors
        ST      0x13160
        D       h_dc, 16, R
        D       s_zero, 16, R
        D       0x13160, 1, W|E
        dd      ENDC
        dd      0
        db      1                       ; OUT of 0 bytes at the end
        ST      0x13170
        D       h_out0, 16, R
        D       0x13170, 1, W|E
        dd      ENDC
        dd      0
        db      1                       ; IN 8 into a readable data buffer
        ST      0x13180                 ; (the device writes it anyway)
        D       h_in8, 16, R
        D       0x16600, 512, R
        D       0x13180, 1, W|E
        dd      ENDC
        dd      0
        db      1                       ; IN 9: status is the last byte of a
        ST      0x13193                 ; 4-byte buffer after the data
        D       h_in9, 16, R
        D       0x16800, 509, W
        D       0x13190, 4, W|E
        dd      ENDC
        dd      0x16800
        dw      8
        dd      0x13190
        dw      4
        dd      0
        db      1                       ; SCSI: cdb, sense, scsi inhdr:
        ST      0x131A0                 ; SG_IO refused: UNSUPP, errors 255
        D       h_unk, 16, R
        D       cdb, 6, R
        D       0x16A00, 32, W
        D       0x16A40, 16, W
        D       0x131A0, 1, W|E
        dd      ENDC
        dd      0x16A40
        dw      16
        dd      0
        db      1                       ; SCSI both ways: UNSUPP at once
        ST      0x131B0
        D       h_unk, 16, R
        D       cdb, 6, R
        D       cdb, 6, R
        D       0x16C00, 512, W
        D       0x16A00, 32, W
        D       0x16A80, 16, W
        D       0x131B0, 1, W|E
        dd      ENDC
        dd      0x16A80
        dw      16
        dd      0
        db      0xFE

; H, J: one GET_ID chain
hchain: ST      0x13000
        D       h_gid, 16, R
        D       0x14000, 20, W
        D       0x13000, 1, W|E
; K: one read
kchain: ST      0x13000
        D       h_in1, 16, R
        D       0x14000, 512, W
        D       0x13000, 1, W|E

; L: one chain each, device broken after it
lcases:
        db      0xFF                    ; zero-length buffer
        ST      0x13000
        D       h_in1, 16, R
        D       0x14000, 0, W
        D       0x13000, 1, W|E
        dd      ENDC
        dd      0
        db      0xFF                    ; readable after writable
        ST      0x13000
        D       h_in1, 16, R
        D       0x14000, 512, W
        D       h_in1, 16, R
        D       0x13000, 1, W|E
        dd      ENDC
        dd      0
        db      0xFF                    ; no writable buffer
        ST      0
        D       h_in1, 16, R|E
        dd      ENDC
        dd      0
        db      0xFF                    ; header of 8 bytes + status
        ST      0x13000
        D       h_in1, 8, R
        D       0x13000, 1, W|E
        dd      ENDC
        dd      0
        db      0xFE

; M: four reads that do not merge
mchains:
        ST      0x13000
        D       h_in1, 16, R
        D       0x14000, 512, W
        D       0x13000, 1, W|E
        ST      0x13010
        D       h_in5, 16, R
        D       0x14200, 512, W
        D       0x13010, 1, W|E
        ST      0x13020
        D       h_in9, 16, R
        D       0x14400, 512, W
        D       0x13020, 1, W|E
        ST      0x13030
        D       h_in12, 16, R
        D       0x14600, 512, W
        D       0x13030, 1, W|E
        dd      ENDC

        times   NSECT*512-4-($-$$) db 0
sig:    dd      0x42525056
