; irqbios.asm -- IRQ 14 as SeaBIOS leaves it under QEMU 7.2: the 8259s
; (ELCR, masks, the IRQ 14 vector's segment), then READ SECTORS with
; interrupts enabled (SeaBIOS leaves nIEN clear): SeaBIOS's handler sets
; the BIOS data area's disk_interrupt_flag (0040:008E) and sends EOI to
; both PICs, so a second command's IRQ (IDENTIFY) comes in too; with nIEN
; set no IRQ comes; an IRQ raised under CLI is taken at STI; HLT wakes up.
; (The master's IRR is not shown: the PIT's IRQ 0 is pending there under
; QEMU.)  tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov dx, 0x4D0
  in al, dx
  out DBGC, al
  inc dx
  in al, dx
  out DBGC, al
  mov ax, [0x76 * 4 + 2]
  call put2
  in al, 0x21
  out DBGC, al
  in al, 0xA1
  out DBGC, al
  call pics
  mov al, [0x48E]
  out DBGC, al
  ; READ SECTORS LBA 1, STI: the IRQ runs SeaBIOS's handler
  mov byte [0x48E], 0
  mov al, 0x20
  call cmd
  sti
  call waitflag
  cli
  call pics
  call drain
  ; IDENTIFY: a second IRQ comes in (the handler sent EOI)
  mov byte [0x48E], 0
  mov al, 0xEC
  call cmd
  sti
  call waitflag
  cli
  call drain
  ; nIEN set: no IRQ (IDENTIFY completes at once: wait for not-BSY,
  ; open an interrupt window, look)
  mov dx, 0x3F6
  mov al, 0x0A
  out dx, al
  mov byte [0x48E], 0
  mov al, 0xEC
  call cmd
  mov dx, 0x3F6
.nb:
  in al, dx
  test al, 0x80
  jnz .nb
  sti
  nop
  nop
  cli
  mov al, [0x48E]
  out DBGC, al
  call drain
  mov dx, 0x3F6
  mov al, 0x08
  out dx, al
  ; raised under CLI, taken at STI; then HLT wakes on the next one
  mov byte [0x48E], 0
  mov al, 0xEC
  call cmd
  mov dx, 0x3F6
.busy:
  in al, dx
  test al, 0x80
  jnz .busy
  mov al, [0x48E]
  out DBGC, al
  mov al, 0x0A
  out 0xA0, al
  in al, 0xA0
  out DBGC, al
  sti
  nop
  cli
  mov al, [0x48E]
  out DBGC, al
  call drain
  mov byte [0x48E], 0
  mov al, 0xEC
  call cmd
.h:
  sti
  hlt
  cli
  cmp byte [0x48E], 0
  je .h
  mov al, [0x48E]
  out DBGC, al
  call drain
  call pics
  mov al, 0x10
  out 0xF4, al
  hlt

; command AL to the master: LBA 1, one sector
cmd:
  push ax
  mov dx, 0x1F2
  mov al, 1
  out dx, al
  inc dx
  out dx, al
  inc dx
  xor al, al
  out dx, al
  inc dx
  out dx, al
  inc dx
  mov al, 0xE0
  out dx, al
  inc dx
  pop ax
  out dx, al
  ret

; wait (bounded) for the flag, then report it and the alternate status
waitflag:
  mov ecx, 5000000
.w:
  cmp byte [0x48E], 0
  jne .got
  a32 loop .w
.got:
  mov al, [0x48E]
  out DBGC, al
  mov dx, 0x3F6
  in al, dx
  out DBGC, al
  ret

; read the data block, then the status (which lowers the IRQ)
drain:
  mov dx, 0x3F6
.b:
  in al, dx
  test al, 0x80
  jnz .b
  mov dx, 0x1F0
  mov di, 0x9000
  mov cx, 256
  rep insw
  mov dx, 0x1F7
  in al, dx
  out DBGC, al
  ret

; master ISR, slave IRR and ISR
pics:
  mov al, 0x0B
  out 0x20, al
  in al, 0x20
  out DBGC, al
  mov al, 0x0A
  out 0xA0, al
  in al, 0xA0
  out DBGC, al
  mov al, 0x0B
  out 0xA0, al
  in al, 0xA0
  out DBGC, al
  ret

put2:
  out DBGC, al
  mov al, ah
  out DBGC, al
  ret
  times 510-($-$$) db 0
  dw 0xAA55
