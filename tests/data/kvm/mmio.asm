; mmio.asm -- KVM_EXIT_MMIO from real code: enter 32-bit protected mode with
; flat segments, read and write a dword in the PCI hole (0xD0000000, where
; nothing is mapped with 128 MiB of RAM), report the value read and a RAM
; read-back on isa-debugcon, exit through isa-debug-exit with 0x10.
BITS 16
ORG 0x7C00
        cli
        xor     ax, ax
        mov     ds, ax
        lgdt    [gdtr]
        mov     eax, cr0
        or      al, 1
        mov     cr0, eax
        jmp     0x08:pm
BITS 32
pm:     mov     ax, 0x10
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     esp, 0x7000
        mov     eax, [0xD0000000]          ; MMIO read: unassigned
        out     0xE9, al
        shr     eax, 8
        out     0xE9, al
        mov     dword [0xD0000000], 0x12345678   ; MMIO write: dropped
        mov     eax, [0xD0000000]
        out     0xE9, al
        mov     dword [0x00100000], 0xA5A55A5A   ; RAM above 1 MiB
        mov     eax, [0x00100000]
        out     0xE9, al
        mov     al, 0x10
        out     0xF4, al
        jmp     $
align 8
gdt:    dq      0
        dq      0x00CF9A000000FFFF         ; 0x08: code, flat 4 GiB
        dq      0x00CF92000000FFFF         ; 0x10: data, flat 4 GiB
gdtr:   dw      gdtr - gdt - 1
        dd      gdt
        times 510-($-$$) db 0
        dw      0xAA55
