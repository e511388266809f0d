; IRQ 14 through the in-kernel PIC: program the PICs as SeaBIOS does
; (master base 0x08, slave base 0x70), install an IRQ 14 handler, issue
; READ SECTORS with nIEN clear, HLT until the interrupt, read the data.
BITS 16
ORG 0x7C00
start:
  cli
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  ; ICW1..ICW4 master
  mov al, 0x11
  out 0x20, al
  out 0xA0, al
  mov al, 0x08
  out 0x21, al
  mov al, 0x70
  out 0xA1, al
  mov al, 0x04
  out 0x21, al
  mov al, 0x02
  out 0xA1, al
  mov al, 0x01
  out 0x21, al
  out 0xA1, al
  ; masks: master all but cascade (IRQ2), slave all but IRQ14 (bit 6)
  mov al, 0xFB
  out 0x21, al
  mov al, 0xBF
  out 0xA1, al
  ; IVT entry 0x76 -> isr
  mov word [0x76*4], isr
  mov word [0x76*4+2], 0
  ; nIEN clear, select master LBA
  mov dx, 0x3F6
  mov al, 0x00
  out dx, al
  mov dx, 0x1F6
  mov al, 0xE0
  out dx, al
  mov dx, 0x1F2
  mov al, 1
  out dx, al
  mov dx, 0x1F3
  mov al, 7          ; LBA 7
  out dx, al
  mov dx, 0x1F4
  xor al, al
  out dx, al
  mov dx, 0x1F5
  out dx, al
  mov dx, 0x1F7
  mov al, 0x20
  out dx, al
again:
  sti
  hlt
  cli
  cmp byte [flag], 0
  je again
  ; read the sector's first word (LBA as u32 LE: 7) and report it
  mov dx, 0x1F0
  in ax, dx
  out 0xE9, al
  mov al, [flag]
  out 0xE9, al
  mov al, 0x10
  out 0xF4, al
  jmp $
isr:
  push ax
  push dx
  mov dx, 0x1F7      ; status read lowers the IDE IRQ
  in al, dx
  inc byte [flag]
  mov al, 0x20
  out 0xA0, al
  out 0x20, al
  pop dx
  pop ax
  iret
flag: db 0
  times 510-($-$$) db 0
  dw 0xAA55
