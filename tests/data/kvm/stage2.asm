; stage2.asm -- a two-stage boot loader's disk path under QEMU 7.2 +
; SeaBIOS: the boot sector loads the second stage with INT 13h AH=02;
; the second stage loads big data with AH=02 (127 sectors across a 64 KiB
; boundary; one sector at FFFF:FFF0, above 1 MiB) and AH=42 (127 sectors
; where the offset wraps the segment, 8 above 1 MiB at FFFF:1010, 128 =
; 64 KiB exactly, a DAP with the 64-bit flat address SeaBIOS ignores, 129)
; and writes 2 sectors from FFFF:1010 with AH=43 (above 1 MiB, SeaBIOS's
; 16-bit ATA driver wraps at 1 MiB: segment = linear >> 4);
; then switches to 32-bit protected mode (flat segments) and drives the
; primary IDE channel: READ SECTORS x8 with rep insd and WRITE SECTORS x4
; with rep outsd, each block after IRQ 14 (level-triggered, polled in the
; slave PIC's IRR with IF=0: this host's KVM cannot return from a 32-bit
; interrupt), then READ DMA and WRITE DMA through the PIIX bus master
; (PRDs and buffers above 1 MiB) waiting for IRQ 14 the same way.  To debugcon: each
; INT 13h call's AX, CF and DAP count; per loaded range the 32-bit sum of
; its dwords and the first dword of its first and last sector; per PIO
; block and DMA command the statuses read (ATA status, BM status) and the
; IRQ count; sums of the PIO and DMA buffers; isa-debug-exit 0x10 at the
; end (status 33).  tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC  equ 0xE9
RES   equ 0x6000        ; results of the real-mode loads (6 bytes each)
NSEC  equ (stage2_end - stage2 + 511) / 512
BM    equ 0xC000
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov [drive], dl
  mov ax, 0x0200 + NSEC
  mov cx, 0x0002
  xor dh, dh
  mov bx, 0x7E00
  int 0x13
  jc fail
  jmp stage2
fail:
  mov al, 0xEE
  out DBGC, al
  mov al, 0x11
  out 0xF4, al
  hlt
drive: db 0
  times 510-($-$$) db 0
  dw 0xAA55

stage2:
  mov di, RES
  ; AH=02: 127 sectors from LBA 200 (CHS 0/3/12 of 32/16/63) at 0F00:0000
  ; (linear 0xF000..0x1EDFF: across 0x10000)
  push word 0x0F00
  pop es
  xor bx, bx
  mov ax, 0x027F
  mov cx, 0x000C
  mov dh, 3
  call chs
  ; AH=02: 1 sector (LBA 201) at FFFF:FFF0 = 0x10FFE0
  push word 0xFFFF
  pop es
  mov bx, 0xFFF0
  mov ax, 0x0201
  mov cx, 0x000D
  mov dh, 3
  call chs
  ; AH=42: 127 sectors from LBA 1000 at 1000:F000 = 0x1F000 (the offset
  ; wraps in the segment; SeaBIOS goes on linearly)
  mov si, dap1
  call ext
  ; 8 from LBA 2000 at FFFF:1010 = 0x101000 (SeaBIOS's 16-bit ATA driver
  ; takes segment = linear >> 4, which wraps at 1 MiB: 0x1000)
  mov si, dap2
  call ext
  ; AH=43: 2 sectors from there to LBA 600
  mov si, dapw
  call ext
  ; 128 (64 KiB) from LBA 0x7F80, the disk's last, at 3000:0000
  mov si, dap3
  call ext
  ; a 24-byte DAP: segment:offset 4000:0000, flat address 0x500000
  mov si, dap4
  call ext
  ; 129: more than 64 KiB
  mov si, dap5
  call ext
  ; protected mode
  cli
  lgdt [gdtr]
  mov eax, cr0
  or al, 1
  mov cr0, eax
  jmp 0x08:pm

chs:
  mov dl, [drive]
  push di
  stc
  int 0x13
  pop di
  mov [di], ax
  pushf
  pop word [di + 2]
  mov word [di + 4], 0xFFFF
  add di, 6
  xor ax, ax
  mov es, ax
  ret
ext:
  mov dl, [drive]
  mov ah, 0x42
  push di
  push si
  stc
  int 0x13
  pop si
  pop di
  mov [di], ax
  pushf
  pop word [di + 2]
  mov ax, [si + 2]
  mov [di + 4], ax
  add di, 6
  ret

align 8
dap1: db 16, 0
      dw 127, 0xF000, 0x1000
      dq 1000
dap2: db 16, 0
      dw 8, 0x1010, 0xFFFF
      dq 2000
dapw: db 16, 0
      dw 2, 0x1010, 0xFFFF
      dq 600
dap3: db 16, 0
      dw 128, 0x0000, 0x3000
      dq 0x7F80
dap4: db 24, 0
      dw 4, 0x0000, 0x4000
      dq 3000
      dq 0x500000
dap5: db 16, 0
      dw 129, 0x0000, 0x4000
      dq 3000
align 8
gdt:  dq 0
      dq 0x00CF9A000000FFFF        ; 0x08: code, flat, 32-bit
      dq 0x00CF92000000FFFF        ; 0x10: data, flat
gdtr: dw 23
      dd gdt

BITS 32
pm:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov esp, 0x7000
  ; the INT 13h results
  mov esi, RES
  mov ecx, 8 * 6
.r:
  lodsb
  out DBGC, al
  loop .r
  ; the loaded ranges: (linear, sectors)
  mov esi, ranges
.g:
  mov ebx, [esi]
  test ebx, ebx
  jz .gd
  mov ecx, [esi + 4]
  push esi
  call range
  pop esi
  add esi, 8
  jmp .g
.gd:
  ; IRQ 14 level-triggered (ELCR2 bit 6): the slave PIC's IRR then
  ; follows the line, and the CPU polls it with IF=0 (protected-mode
  ; interrupts are not taken: this host's KVM, PVM, cannot emulate a
  ; 32-bit iret, under QEMU as under gqemu)
  mov dx, 0x4D1
  in al, dx
  or al, 0x40
  out dx, al
  ; nIEN clear, and the line low (a status read)
  mov dx, 0x3F6
  xor al, al
  out dx, al
  mov dx, 0x1F7
  in al, dx
  ; READ SECTORS: LBA 300 x8 into 0x200000, rep insd per block
  mov edi, 0x200000
  mov ebx, 300
  mov cl, 8
  mov al, 0x20
  call ata_cmd
  mov ebp, 8
.rd:
  call wait_irq
  mov dx, 0x1F7
  in al, dx
  out DBGC, al
  mov dx, 0x1F0
  mov ecx, 128
  rep insd
  dec ebp
  jnz .rd
  mov al, [irqs]
  out DBGC, al
  ; WRITE SECTORS: LBA 400 x4 from 0x1F000 (what AH=42 put there)
  mov esi, 0x1F000
  mov ebx, 400
  mov cl, 4
  mov al, 0x30
  call ata_cmd
  mov ebp, 4
.wr:
  mov dx, 0x3F6
.wdrq:
  in al, dx
  test al, 0x80
  jnz .wdrq
  out DBGC, al
  mov dx, 0x1F0
  mov ecx, 128
  rep outsd
  call wait_irq
  mov dx, 0x1F7
  in al, dx
  out DBGC, al
  dec ebp
  jnz .wr
  mov al, [irqs]
  out DBGC, al
  ; bus mastering on (PCI 00:01.1 command: I/O + master)
  mov dx, 0xCF8
  mov eax, 0x80000904
  out dx, eax
  mov dx, 0xCFC
  mov ax, 0x0005
  out dx, ax
  ; the PRD table at 0x3FF000: 1024 bytes at 0x400000, 1024 at 0x41FE00
  ; (across 0x420000)
  mov dword [0x3FF000], 0x400000
  mov dword [0x3FF004], 1024
  mov dword [0x3FF008], 0x41FE00
  mov dword [0x3FF00C], 0x80000000 + 1024
  ; READ DMA: LBA 400 x4 (what the PIO write put there)
  mov ebx, 400
  mov cl, 4
  mov ah, 0x08
  mov al, 0xC8
  call dma
  ; WRITE DMA: LBA 500 x4 from the PIO read's buffer
  mov dword [0x3FF000], 0x200000
  mov dword [0x3FF004], 0x80000000 + 2048
  mov ebx, 500
  mov cl, 4
  mov ah, 0x00
  mov al, 0xCA
  call dma
  ; and READ DMA of it back into 0x600000
  mov dword [0x3FF000], 0x600000
  mov ebx, 500
  mov cl, 4
  mov ah, 0x08
  mov al, 0xC8
  call dma
  ; the buffers
  mov ebx, 0x200000
  mov ecx, 8
  call range
  mov ebx, 0x400000
  mov ecx, 2
  call range
  mov ebx, 0x41FE00
  mov ecx, 2
  call range
  mov ebx, 0x600000
  mov ecx, 4
  call range
  mov al, [irqs]
  out DBGC, al
  mov al, 0x10
  out 0xF4, al
  cli
  hlt

; the ATA command AL, LBA EBX, count CL on the master (LBA28)
ata_cmd:
  push eax
  mov dx, 0x3F6
.b:
  in al, dx
  test al, 0x80
  jnz .b
  mov dx, 0x1F2
  mov al, cl
  out dx, al
  inc dx
  mov al, bl
  out dx, al
  inc dx
  mov al, bh
  out dx, al
  inc dx
  mov eax, ebx
  shr eax, 16
  out dx, al
  inc dx
  mov al, 0xE0
  out dx, al
  inc dx
  pop eax
  out dx, al
  ret

; DMA: AL the command, AH the BM direction (8: to memory), EBX, CL
dma:
  push eax
  mov dx, BM
  xor al, al
  out dx, al
  mov dx, BM + 2
  mov al, 0x06
  out dx, al
  mov dx, BM + 4
  mov eax, 0x3FF000
  out dx, eax
  pop eax
  push eax
  call ata_cmd
  pop eax
  mov al, ah
  or al, 1
  mov dx, BM
  out dx, al
  call wait_irq
  mov dx, BM + 2
  in al, dx
  out DBGC, al
  mov dx, BM
  xor al, al
  out dx, al
  mov dx, 0x1F7
  in al, dx
  out DBGC, al
  mov dx, BM + 2
  in al, dx
  out DBGC, al
  mov al, 0x06
  out dx, al
  mov al, [irqs]
  out DBGC, al
  ret

; wait until IRQ 14's line is high (the slave's IRR, OCW3 0x0A)
wait_irq:
  mov al, 0x0A
  out 0xA0, al
.w:
  in al, 0xA0
  test al, 0x40
  jz .w
  inc byte [irqs]
  ret

; EBX linear, ECX sectors: the 32-bit sum of the dwords, the first dword
; of the first and of the last sector
range:
  push ecx
  mov esi, ebx
  shl ecx, 7
  xor edx, edx
.s:
  lodsd
  add edx, eax
  loop .s
  mov eax, edx
  call put4
  mov eax, [ebx]
  call put4
  pop ecx
  dec ecx
  shl ecx, 9
  mov eax, [ebx + ecx]
  call put4
  ret
put4:
  mov ecx, 4
.p:
  out DBGC, al
  shr eax, 8
  loop .p
  ret

irqs:    db 0
align 4
ranges:
  dd 0xF000, 127
  dd 0x10FFE0, 1
  dd 0xFFE0, 1
  dd 0x1F000, 127
  dd 0x101000, 8
  dd 0x1000, 8
  dd 0x30000, 128
  dd 0x40000, 4
  dd 0x500000, 4
  dd 0
stage2_end:
  align 512, db 0
